"""What the window shows before a file is open: a clear prompt, Open, the demo, and recent files."""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class EmptyState(QWidget):
    """The start page: "Open a model or capture", with the demo one click away."""

    open_requested = Signal()
    demo_requested = Signal()
    recent_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("emptyState")
        outer = QVBoxLayout(self)
        outer.addStretch(2)
        title = QLabel("Open a model or capture")
        title.setObjectName("emptyTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        title.setStyleSheet("font-size: 22pt; font-weight: 600; color: #333;")
        outer.addWidget(title)
        hint = QLabel(
            "A <b>capture</b> (.h5 from <code>qinspect capture</code>) holds a model's float activations: "
            "every layer can be inspected at once.<br>A <b>Keras model</b> (.h5, .keras, or a SavedModel folder: "
            "drop it, or pick its saved_model.pb) shows its graph "
            "and weights, and can be captured from a .npy array or a folder of images.<br>"
            "Drop a file anywhere on this window, or use File &gt; Open (Ctrl+O)."
        )
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        hint.setWordWrap(True)
        hint.setStyleSheet("color: #555; font-size: 11pt;")
        outer.addWidget(hint)
        row = QHBoxLayout()
        row.addStretch(1)
        self.open_button = QPushButton("Open a file…")
        self.open_button.setMinimumWidth(180)
        self.open_button.clicked.connect(self.open_requested)
        self.demo_button = QPushButton("Open the demo capture")
        self.demo_button.setObjectName("demoButton")
        self.demo_button.setMinimumWidth(220)
        self.demo_button.setDefault(True)
        self.demo_button.clicked.connect(self.demo_requested)
        for button in (self.open_button, self.demo_button):
            button.setMinimumHeight(36)
            row.addWidget(button)
        row.addStretch(1)
        outer.addSpacing(12)
        outer.addLayout(row)
        self.demo_progress = QProgressBar()
        self.demo_progress.setObjectName("demoProgress")
        self.demo_progress.setFixedWidth(420)
        self.demo_progress.setFormat("Building the demo: %v of %m samples")
        self.demo_progress.setVisible(False)
        outer.addSpacing(8)
        outer.addWidget(self.demo_progress, alignment=Qt.AlignmentFlag.AlignCenter)
        self.demo_note = QLabel("")
        self.demo_note.setObjectName("demoNote")
        self.demo_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.demo_note.setWordWrap(True)
        self.demo_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.demo_note.setStyleSheet("color: #777;")
        outer.addWidget(self.demo_note)
        self._recent_box = QVBoxLayout()
        outer.addSpacing(16)
        outer.addLayout(self._recent_box)
        outer.addStretch(3)

    def set_demo(self, path: str | None, how_to_build: str = "", can_build: bool = False) -> None:
        """The demo button: open the demo capture when it exists, else build it (when ``can_build``), else
        disabled; ``how_to_build`` says what the build does or what to install for it."""
        self.demo_progress.setVisible(False)
        if path:
            self.demo_button.setText("Open the demo capture")
            self.demo_button.setEnabled(True)
            self.demo_note.setText(f"Demo: {os.path.basename(path)} (a real pretrained model on real images)")
            return
        self.demo_button.setText("Build the demo capture")
        self.demo_button.setEnabled(can_build)
        self.demo_note.setText(how_to_build)

    def set_demo_progress(self, done: int, total: int) -> None:
        """Show the demo build's progress (the button stays disabled until it ends)."""
        self.demo_button.setEnabled(False)
        self.demo_progress.setVisible(True)
        self.demo_progress.setRange(0, max(total, 0))  # 0: busy (loading TensorFlow and the model)
        self.demo_progress.setValue(done)

    def set_recent(self, files: list[str]) -> None:
        """List recent files as buttons under the prompt."""
        while self._recent_box.count():
            item = self._recent_box.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        if not files:
            return
        label = QLabel("Recent files")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setStyleSheet("color: #555; font-weight: 600;")
        self._recent_box.addWidget(label)
        for path in files[:5]:
            button = QPushButton(path)
            button.setFlat(True)
            button.setStyleSheet("color: #2a5db0; text-align: center;")
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(lambda _=False, p=path: self.recent_requested.emit(p))
            self._recent_box.addWidget(button, alignment=Qt.AlignmentFlag.AlignCenter)

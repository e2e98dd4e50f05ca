"""Capture a model's activations from the GUI: a .npy array or an image folder, with progress and cancel.

The work is the same as ``qinspect capture`` (``qinspect.capture.runner``): checked first without
TensorFlow, then run in a helper process (``capture_job``), so TensorFlow never competes with the
window for the GIL. Cancel stops after the current batch; the runner's atomic writer then leaves
nothing at the destination.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qinspect.gui.worker import CancelToken, Channel, in_own_process


def capture_job(token: CancelToken, model_path: str, inputs: str, output: str, samples: int | None,
                preprocess: str | None) -> str:
    """Worker: the capture (:func:`qinspect.gui.capture_job.capture`) in a helper process, its progress
    forwarded; cancelling the token stops it after the current batch. Returns the capture path."""
    from qinspect.gui import capture_job as job

    return in_own_process(token, job.capture, model_path, inputs, output, samples, preprocess)


class CaptureDialog(QDialog):
    """Choose the calibration inputs and where the capture goes; run it with a progress bar."""

    captured = Signal(str)

    def __init__(self, model_path: str, settings, errors, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Capture activations")
        self.model_path = model_path
        self.settings = settings
        self.errors = errors
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Run <b>{os.path.basename(model_path)}</b> on calibration data and store every "
                                "layer's float output in a capture file."))
        form = QFormLayout()
        self.inputs = QLineEdit()
        self.inputs.setPlaceholderText(".npy / .npz array (NHWC, preprocessed), a folder of images or of class folders")
        row = QHBoxLayout()
        row.addWidget(self.inputs, 1)
        for text, folder in (("Array…", False), ("Image folder…", True)):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, f=folder: self._browse_inputs(f))
            row.addWidget(button)
        form.addRow("Inputs:", row)
        self.preprocess = QComboBox()
        self.preprocess.addItem("none (array is already preprocessed)", None)
        from qinspect.io.inputs import PREPROCESS

        for mode in PREPROCESS:
            self.preprocess.addItem(mode, mode)
        form.addRow("Image preprocessing:", self.preprocess)
        self.samples = QSpinBox()
        self.samples.setRange(0, 1_000_000)
        self.samples.setSpecialValueText("all")
        form.addRow("Samples:", self.samples)
        self.output = QLineEdit(str(Path(model_path).with_suffix("")) + "_capture.h5")
        form.addRow("Capture file:", self.output)
        layout.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.start = QPushButton("Capture")
        self.start.setDefault(True)
        self.start.clicked.connect(self.run_capture)
        self.cancel = QPushButton("Close")
        self.cancel.clicked.connect(self._cancel)
        buttons.addWidget(self.start)
        buttons.addWidget(self.cancel)
        layout.addLayout(buttons)
        self.channel = Channel("capture", self)
        self.channel.progress.connect(self._on_progress)
        self.channel.finished.connect(self._on_finished)
        self.channel.failed.connect(self._on_failed)
        self.resize(640, 260)

    def _browse_inputs(self, folder: bool) -> None:
        start = self.settings.last_folder()
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Folder of calibration images", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Calibration inputs", start, "Arrays (*.npy *.npz)")
        if path:
            self.inputs.setText(path)
            if folder and self.preprocess.currentData() is None:
                self.preprocess.setCurrentIndex(self.preprocess.findData("0..1"))

    def run_capture(self) -> None:
        """Start the capture in the background."""
        inputs = self.inputs.text().strip()
        if not inputs:
            self.status.setText("Choose the calibration inputs first.")
            return
        self.start.setEnabled(False)
        self.cancel.setText("Cancel")
        self.status.setText("Starting…")
        self.progress.setRange(0, 0)
        self.channel.submit(capture_job, self.model_path, inputs, self.output.text().strip(),
                            self.samples.value() or None, self.preprocess.currentData())

    def _on_progress(self, _rid: int, done: int, total: int, text: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status.setText(text or f"{done} of {total} samples")

    def _on_finished(self, _rid: int, path: str) -> None:
        self.status.setText(f"Written {path}")
        self.captured.emit(path)
        self.accept()

    def _on_failed(self, _rid: int, exc: BaseException, tb: str) -> None:
        self._reset("Failed.")
        self.errors.report(exc, tb, "Capturing activations")

    def _reset(self, text: str) -> None:
        self.start.setEnabled(True)
        self.cancel.setText("Close")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(text)

    def _cancel(self) -> None:
        if self.channel.busy:
            self.channel.cancel()
            self._reset("Cancelled: nothing was written.")
        else:
            self.reject()

"""Render qinspect/resources/qinspect.svg to the PNG sizes desktops look up (run after editing the SVG).

    QT_QPA_PLATFORM=offscreen python scripts/render_icons.py

Writes qinspect/resources/icons/NxN.png for the hicolor theme's standard sizes; `qinspect --install-desktop`
installs them with the SVG (tests/test_desktop.py checks that each PNG has its size and is up to date).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
PACKAGE = Path(__file__).resolve().parents[1] / "qinspect" / "resources"


def render(svg: Path, size: int) -> bytes:
    """The SVG drawn antialiased on a transparent size x size canvas, as PNG bytes."""
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


def main() -> int:
    """Write every size next to the SVG, under icons/."""
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    folder = PACKAGE / "icons"
    folder.mkdir(exist_ok=True)
    for size in SIZES:
        (folder / f"{size}x{size}.png").write_bytes(render(PACKAGE / "qinspect.svg", size))
    print(f"wrote {len(SIZES)} icons to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

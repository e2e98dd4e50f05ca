#!/usr/bin/env bash
# Debian packages Qt needs (offscreen and under Xvfb) and that the screenshot test uses; the freedesktop
# validators and MIME tools tests/test_desktop.py runs on what `qinspect --install-desktop` writes.
# As root, installs what is missing; otherwise prints the exact command to run.
set -euo pipefail
pkgs=(libgl1 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0
      libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-render-util0 libxcb-shape0
      libxcb-randr0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 fonts-dejavu-core xvfb xauth
      desktop-file-utils appstream shared-mime-info libglib2.0-bin)
command -v dpkg-query >/dev/null || { echo "sysdeps: not a Debian system; install Qt's X11/EGL libraries yourself"; exit 0; }
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "sysdeps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "sysdeps: Qt needs system libraries; run:"
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
fi

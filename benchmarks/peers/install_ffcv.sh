#!/usr/bin/env bash
# Install FFCV (https://github.com/libffcv/ffcv, PyPI "ffcv") into its own venv, as a
# benchmark peer for torchloader. Idempotent: rerunning skips what is already there.
#
#   bash benchmarks/peers/install_ffcv.sh [VENV]      # VENV defaults to /work/venv-ffcv
#
# FFCV 1.0.2 ships only as an sdist with a C++ extension (libffcv) that links
# libturbojpeg and OpenCV found through pkg-config, so the Debian dev packages come first.
# ffcv is installed with --no-deps and its requirements are listed here by hand, so that
# opencv-python-headless (no libGL needed) stands in for the opencv-python it names.
set -euo pipefail

VENV="${1:-/work/venv-ffcv}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Versions known to work together here (Python 3.11, torch 2.13.0+cpu, Debian 12's
# libturbojpeg 2.1.5 and OpenCV 4.6 for building libffcv). No numpy conflict was met:
# ffcv 1.0.2 pins no numpy, and numba 0.68.1 supports numpy 2.4.
TORCH_VERSION="2.13.0"
FFCV_VERSION="1.0.2"
PINS=(
  "numpy==2.4.6"
  "numba==0.68.1"
  "llvmlite==0.50.0"
  "opencv-python-headless==5.0.0.93"
  "pillow==13.0.0"
  "psutil==7.2.2"
  "scikit-learn==1.9.1"
  "terminaltables==3.1.10"
  "pytorch-pfn-extras==0.9.0"
  "fastargs==1.2.0"
  "assertpy==1.1"
  "tqdm==4.70.1"
)

export DEBIAN_FRONTEND=noninteractive
APT_PKGS=(libturbojpeg0-dev libopencv-dev pkg-config build-essential)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
pkg-config --exists opencv4 libturbojpeg

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)

# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
"$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
  || "${PIP[@]}" "torch==$TORCH_VERSION"

# ffcv's own requirements (less opencv-python, replaced by the headless build), plus what
# benchmarks/common.py needs. torch is named again so that nothing can move it.
"${PIP[@]}" "${PINS[@]}" "torch==$TORCH_VERSION"

# The sdist builds libffcv against the system libturbojpeg/OpenCV (pkg-config), ~10 s.
# ffcv.__version__ says 0.0.3rc1 in 1.0.2, so ask the package metadata instead.
"$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('ffcv') != '$FFCV_VERSION')" 2>/dev/null \
  && "$PY" -c "import ffcv.libffcv" 2>/dev/null \
  || "${PIP[@]}" --no-deps --no-cache-dir --force-reinstall "ffcv==$FFCV_VERSION"

(cd / && "$PY" -c "import torchloader") 2>/dev/null || "${PIP[@]}" -e "$REPO" --no-deps

"$PY" - <<'PY'
import ffcv, numba, numpy, cv2, torch
from ffcv.loader import Loader  # noqa: F401  (imports the compiled libffcv)
from importlib.metadata import version
print(f"ffcv {version('ffcv')}, numba {numba.__version__}, numpy {numpy.__version__}, "
      f"opencv {cv2.__version__}, torch {torch.__version__}")
PY

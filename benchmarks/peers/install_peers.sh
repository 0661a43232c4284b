#!/usr/bin/env bash
# Install the LitData, WebDataset and MosaicML Streaming benchmark peers into their
# own venv (default /work/venv-peers), with the versions these scripts were run with.
#
#   bash benchmarks/peers/install_peers.sh [VENV]
#
# Idempotent: re-running keeps the venv and installs only what is missing.
#
# torch: the CPU build 2.13.0 goes in first (pip takes it from this machine's disk);
# every later step runs under a constraint pinning it, so no peer can pull a
# multi-GB CUDA build of torch.
#
# torchvision: litdata and mosaicml-streaming declare it, but PyPI's Linux x86_64
# wheels are built against CUDA torch (their _C.so links libtorch_cuda.so) and fail
# to import beside the CPU torch ("operator torchvision::nms does not exist"). It is
# removed again at the end. What each peer does without it:
#   litdata_peer.py   decodes LitData's stored JPEG bytes with simplejpeg (LitData
#                     itself would call torchvision.io.decode_jpeg)
#   streaming_peer.py puts a stand-in for torchvision in sys.modules, since
#                     `import streaming` imports streaming.vision (unused here)
set -euo pipefail

VENV="${1:-/work/venv-peers}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

TORCH="torch==2.13.0"
PEERS=(
  "litdata==0.2.76"
  "webdataset==1.0.2"
  "mosaicml-streaming==0.13.0"
)
EXTRAS=(
  "psutil==7.2.2"
  "numpy==2.1.3"
  "pillow==13.0.0"
  "scikit-learn==1.9.1"
  "simplejpeg==1.9.0"
  "tqdm==4.70.1"  # torchloader (installed with --no-deps) needs it
)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "$TORCH" > "$CONSTRAINTS"

"$PY" -m pip install -q --disable-pip-version-check "$TORCH"
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "${PEERS[@]}" "${EXTRAS[@]}"
"$PY" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" --no-deps -e "$REPO"

# The CUDA-only torchvision that the peers pulled in cannot import here (see above).
if "$PY" -m pip show -q torchvision >/dev/null 2>&1; then
  "$PY" -m pip uninstall -y -q torchvision
fi

"$PY" - <<'EOF'
import os

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
from importlib.metadata import version

import torch

assert torch.__version__.startswith("2.13.0"), torch.__version__
import litdata  # noqa: F401
import simplejpeg  # noqa: F401
import webdataset  # noqa: F401
import torchloader.tools.bench  # noqa: F401  (benchmarks/common.py times with it)

print(
    "peers venv ok:",
    ", ".join(
        f"{name} {version(name)}"
        for name in ["torch", "litdata", "webdataset", "mosaicml-streaming", "simplejpeg", "pillow", "numpy"]
    ),
)
EOF

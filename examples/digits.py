"""Write the handwritten digits that scikit-learn ships as a folder of PNG files.

1797 grey 8x8 images (no network needed), scaled to 28x28, as
``<root>/{train,test}/<digit>/<n>.png``: a fixed, seeded 80/20 split (the same
whatever the training seed). ``examples/train.py`` calls :func:`build_digits`;
on its own::

    python examples/digits.py [ROOT]          # default: data/digits
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import numpy as np

DIGITS_COUNT = 1797  # images in sklearn.datasets.load_digits
SPLIT_SEED = 0  # the train/test split on disk does not depend on the training seed
TEST_FRACTION = 0.2


def build_digits(root: str) -> str:
    """Write the scikit-learn digits as ``root/{train,test}/<digit>/<n>.png``; return root.

    A complete ``root`` is reused as it is. The folder is built under a temporary
    name beside ``root`` and moved into place with one ``os.replace``, so an
    interrupted build leaves no ``root`` that looks complete.
    """
    if os.path.isdir(root):
        _check_digits_complete(root)
        return root
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".digits-partial-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the final folder should not be
    try:
        _write_digits(tmp)
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: use its folder
            if not os.path.isdir(root):
                raise
            _check_digits_complete(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_digits(root: str) -> None:
    # Imported here: only the digits need scikit-learn (the `example` extra).
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
    is_test = np.zeros(len(images), dtype=bool)
    rng = np.random.default_rng(SPLIT_SEED)
    is_test[rng.permutation(len(images))[: round(TEST_FRACTION * len(images))]] = True
    for n, (image, label) in enumerate(zip(images, digits.target)):
        folder = os.path.join(root, "test" if is_test[n] else "train", str(label))
        os.makedirs(folder, exist_ok=True)
        big = Image.fromarray(image).resize((28, 28), Image.Resampling.BILINEAR)
        big.save(os.path.join(folder, f"{n:04d}.png"))


def _check_digits_complete(root: str) -> None:
    count = sum(
        name.endswith(".png")
        for split in ("train", "test")
        for _, _, files in os.walk(os.path.join(root, split))
        for name in files
    )
    if count != DIGITS_COUNT:
        raise RuntimeError(
            f"'{root}' holds {count} of the {DIGITS_COUNT} digit images, so it is not a "
            f"complete digits folder; delete it, or pass --digits-dir to build the "
            f"digits elsewhere"
        )


if __name__ == "__main__":
    print(build_digits(sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "digits")))

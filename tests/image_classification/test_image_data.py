"""The image data stage: every bad input of the issue is dropped with one counted line,
sources (folder, CSV, JSONL, zip) read the same, duplicates and leakage are reported."""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiflywheel.core.registry import get_task
from aiflywheel.errors import DataError
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.image_classification.images import ImageRejected, decode_image

sys.path.insert(0, str(Path(__file__).parent))
from image_world import make_folder, picture, png, recipe_text  # noqa: E402

LIMITS = {"size": 8, "channels": 1, "max_bytes": 1_000_000, "max_pixels": 40_000_000, "min_side": 2}


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kw)
    return out.getvalue()


def rejected(data: bytes, **kw) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, **{**LIMITS, **kw})
    assert "\n" not in str(caught.value)
    return caught.value


def test_each_bad_image_is_refused_with_one_line() -> None:
    assert rejected(b"this is a text file renamed .png").kind == "not an image"
    assert rejected(b"").kind == "empty"
    jpeg = encoded(Image.fromarray(picture("top", np.random.default_rng(0))), "JPEG")
    assert rejected(jpeg[: len(jpeg) // 2]).kind == "truncated or corrupt"
    bomb = rejected(huge_png(20_000, 20_000))
    assert bomb.kind == "decompression bomb" and "pixels" in str(bomb)
    assert rejected(png(np.zeros((1, 1), np.uint8))).kind == "too small"
    assert rejected(b"x" * 2_000_000).status == 413
    bmp = encoded(Image.new("L", (8, 8)), "BMP")
    assert rejected(bmp).kind == "unsupported format"


def test_cmyk_16_bit_and_animated_images_are_converted_or_dropped_as_configured() -> None:
    cmyk = encoded(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG")
    white = decode_image(cmyk, **LIMITS)
    assert white.pixels.min() > 240 and "CMYK converted to RGB" in white.notes
    assert rejected(cmyk, wrong_mode="drop").kind == "wrong mode"
    deep = Image.fromarray(np.full((8, 8), 65535, np.uint16))
    sixteen = decode_image(encoded(deep, "PNG"), **LIMITS)
    assert sixteen.pixels.max() == 255 and any("8-bit" in n for n in sixteen.notes)
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    first = decode_image(gif, **LIMITS)
    assert first.pixels.max() == 0 and first.notes[0].startswith("animated (2 frames)")


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    array = np.zeros((8, 16), np.uint8)
    array[:, :8] = 255  # bright left half, 16 wide
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encoded(image, "PNG", exif=exif), **{**LIMITS, "size": 8})
    assert (decoded.width, decoded.height) == (8, 16)  # displayed portrait
    assert decoded.pixels[:4].mean() > 200 > decoded.pixels[4:].mean()  # left -> top


def write_bad_folder(root: Path) -> Path:
    make_folder(root, per_label=6)
    rng = np.random.default_rng(3)
    (root / "top" / "notes.png").write_bytes(b"hello, I am text")
    jpeg = encoded(Image.fromarray(picture("top", rng)), "JPEG")
    (root / "top" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "top" / "empty.png").write_bytes(b"")
    (root / "top" / "huge.png").write_bytes(huge_png(20_000, 20_000))
    (root / "top" / "dot.png").write_bytes(png(np.zeros((1, 1), np.uint8)))
    (root / "bottom" / "copy.png").write_bytes((root / "bottom" / "0.png").read_bytes())
    (root / "top" / "mixed.png").write_bytes((root / "bottom" / "1.png").read_bytes())
    (root / "lonely").mkdir()
    (root / "lonely" / "0.png").write_bytes(png(picture("top", rng)))
    return root


def train(tmp_path: Path, source: str, **image):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "recipe.yaml").write_text(recipe_text(source, epochs=1, **image), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    return get_task(recipe.task).train(
        recipe, store=open_store(), settings=get_settings(), report=lambda _: None
    )


def test_a_bad_folder_trains_and_the_report_counts_every_drop(tmp_path: Path) -> None:
    write_bad_folder(tmp_path / "images")
    built = train(tmp_path, "images")
    report = json.loads((built.run_dir / "data_report.json").read_text())
    assert report["drops_by_kind"] == {
        "conflicting duplicate": 2,
        "decompression bomb": 1,
        "empty": 1,
        "label too small": 1,
        "not an image": 1,
        "too small": 1,
        "truncated or corrupt": 1,
    }
    assert report["rows"] == {"read": 20, "kept": 11, "dropped": 8, "exact_duplicates_removed": 1}
    assert all("\n" not in d["reason"] for d in report["drops"])
    assert report["leakage"]["exact"] == {"train-test": 0, "train-val": 0, "val-test": 0}
    assert report["labels"]["counts"] == {"bottom": 5, "top": 6}
    page = (built.run_dir / "data_report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # a contact sheet per label
    assert "dot.png: 1x1, smaller than min_side 2 pixels" in page
    assert (built.run_dir / "report.html").is_file()


def test_csv_jsonl_and_zip_sources_read_the_same_images(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "images", per_label=5)
    files = sorted(folder.glob("*/*.png"))
    rows = [(f.relative_to(tmp_path).as_posix(), f.parent.name) for f in files]
    (tmp_path / "list.csv").write_text(
        "path,label\n" + "".join(f"{p},{label}\n" for p, label in rows), encoding="utf-8"
    )
    (tmp_path / "list.jsonl").write_text(
        "".join(json.dumps({"file": p, "y": label}) + "\n" for p, label in rows), encoding="utf-8"
    )
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for f in files:
            archive.write(f, f"export/{f.relative_to(folder).as_posix()}")
    counts = []
    for source, extra in (
        ("list.csv", {}),
        ("list.jsonl", {"path_column": "file", "label_column": "y"}),
        ("images.zip", {}),
    ):
        built = train(tmp_path / source.replace(".", "-"), f"../{source}", **extra)
        report = json.loads((built.run_dir / "data_report.json").read_text())
        counts.append((report["rows"]["kept"], report["labels"]["counts"]))
    assert counts == [(10, {"bottom": 5, "top": 5})] * 3


def test_one_label_left_is_one_line_and_keeps_stored_versions(tmp_path: Path) -> None:
    make_folder(tmp_path / "images", per_label=4)
    first = train(tmp_path, "images")
    for f in (tmp_path / "images" / "bottom").glob("*.png"):
        f.write_bytes(b"not an image any more")
    with pytest.raises(DataError) as caught:
        train(tmp_path, "images")
    assert "1 label(s)" in str(caught.value) and "\n" not in str(caught.value)
    assert open_store().get_model_version("shapes", first.version).version == first.version
    with pytest.raises(DataError, match="does not exist"):
        train(tmp_path / "x", "missing")


def test_data_check_on_an_image_recipe_is_one_line(tmp_path: Path, capsys) -> None:
    from aiflywheel.cli import main

    (tmp_path / "recipe.yaml").write_text(recipe_text("images"), encoding="utf-8")
    assert main(["data", "check", str(tmp_path / "recipe.yaml")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not use; its training run writes the data report" in err

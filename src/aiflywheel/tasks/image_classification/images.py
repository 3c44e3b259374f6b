"""Decoding one image safely: bytes -> (size x size x channels) uint8 pixels, or a reason.

Every image, in training data and in requests, goes through :func:`decode_image`:
zero-byte, non-image, unsupported format, too many bytes, too many pixels (a
decompression bomb, refused from the header before any pixel is decoded), truncated or
corrupt data, and tiny (1x1) images raise :class:`ImageRejected` with a one-line reason.
The EXIF orientation is applied and nothing else of the metadata survives (only pixels
are kept). Animated GIFs and WebPs give their first frame. CMYK, 16-bit and palette
images are converted to 8-bit grayscale/RGB or refused, as ``wrong_mode`` says.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np

from aiflywheel.errors import DataError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
EIGHT_BIT = {"L", "RGB", "RGBA", "LA", "1"}


class ImageRejected(DataError):
    """An image that cannot be used; ``kind`` groups the reasons in the data report."""

    def __init__(self, kind: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8 (size, size, channels)
    width: int  # as uploaded (after orientation)
    height: int
    format: str
    notes: tuple[str, ...] = ()  # e.g. "animated: first frame", "CMYK converted"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_hash(pixels: np.ndarray) -> str:
    """Exact-duplicate key: the decoded, resized pixels (same picture re-encoded collides)."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def perceptual_hash(pixels: np.ndarray) -> int:
    """64-bit difference hash (dHash) of the grayscale image resized to 9x8."""
    from PIL import Image

    gray = pixels.mean(axis=2).astype(np.uint8) if pixels.shape[2] > 1 else pixels[..., 0]
    small = np.asarray(Image.fromarray(gray).resize((9, 8), Image.Resampling.BILINEAR), float)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _to_eight_bit(image, channels: int, wrong_mode: str, notes: list[str]):
    """A Pillow image in mode L (channels 1) or RGB (3)."""
    from PIL import Image

    mode = image.mode
    if mode not in EIGHT_BIT and mode != "P":
        if wrong_mode == "drop":
            raise ImageRejected("wrong mode", f"mode {mode} (wrong_mode: drop)")
        if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            array = np.asarray(image)
            if mode == "F" or array.dtype.kind == "f":
                array = np.clip(array, 0, 1) * 255
            elif array.max(initial=0) > 255:  # 16-bit: keep the top 8 bits
                array = array / 257.0
            image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "L")
            notes.append(f"{mode} converted to 8-bit")
        else:  # CMYK, YCbCr, LAB, HSV
            image = image.convert("RGB")
            notes.append(f"{mode} converted to RGB")
    elif mode == "P":
        if wrong_mode == "drop" and "transparency" not in image.info:
            raise ImageRejected("wrong mode", "mode P (palette; wrong_mode: drop)")
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):  # transparent pixels become white, not black
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def decode_image(
    data: bytes,
    *,
    size: int,
    channels: int,
    max_bytes: int,
    max_pixels: int,
    min_side: int,
    wrong_mode: str = "convert",
) -> DecodedImage:
    """The image in ``data`` as model input; :class:`ImageRejected` says why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageRejected("empty", "zero-byte file")
    if len(data) > max_bytes:
        raise ImageRejected(
            "too large", f"{len(data):,} bytes, more than max_bytes {max_bytes:,}", status=413
        )
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise ImageRejected("not an image", "not an image Pillow can read") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("decompression bomb", f"declares too many pixels: {exc}") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageRejected("truncated or corrupt", f"corrupt image header ({exc})") from None
        if image.format not in FORMATS:
            raise ImageRejected(
                "unsupported format", f"format {image.format}, expected one of {', '.join(FORMATS)}"
            )
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                "decompression bomb",
                f"{width:,}x{height:,} = {width * height:,} pixels, more than max_pixels "
                f"{max_pixels:,}",
            )
        if min(width, height) < min_side:
            raise ImageRejected(
                "too small", f"{width}x{height}, smaller than min_side {min_side} pixels"
            )
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
            notes.append(f"animated ({image.n_frames} frames): first frame")
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageRejected("truncated or corrupt", f"cannot decode ({exc})") from None
        fmt = str(Image.open(io.BytesIO(data)).format) if image.format is None else image.format
        width, height = image.size
        image = _to_eight_bit(image, channels, wrong_mode, notes)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return DecodedImage(pixels, width, height, fmt or "?", tuple(notes))


def png_bytes(pixels: np.ndarray) -> bytes:
    """``pixels`` (H, W, 1|3) uint8 as PNG."""
    from PIL import Image

    array = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG")
    return out.getvalue()


def thumbnail_png(data: bytes, longest: int) -> bytes:
    """A PNG thumbnail of an (already accepted) image, orientation applied, no metadata."""
    from PIL import Image, ImageOps

    image = Image.open(io.BytesIO(data))
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB") if image.mode not in ("I;16", "I", "F") else image
        if image.mode != "RGB":
            array = np.asarray(image, dtype=np.float64)
            image = Image.fromarray((array / max(1.0, array.max()) * 255).astype(np.uint8), "L")
    image.thumbnail((longest, longest), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

"""What the prediction log keeps of a served image: ``predictions.text`` is a reference
``image sha256:<hex> [stored:<path relative to FLYWHEEL_HOME>]`` and the stored file is a
thumbnail (default), the original upload, or nothing (``image.log.keep``)."""

from __future__ import annotations

import re
from pathlib import Path

from aiflywheel.files import write_bytes_atomic
from aiflywheel.tasks.image_classification.images import sha256, thumbnail_png

REFERENCE = re.compile(r"^image sha256:(?P<sha>[0-9a-f]{64})(?: stored:(?P<path>\S+))?$")


def store_logged_image(data: bytes, *, feature: str, home: Path, keep: str, thumb_px: int) -> str:
    """Write what ``keep`` says under ``<home>/images/<feature>/`` and return the reference."""
    digest = sha256(data)
    if keep == "hash":
        return f"image sha256:{digest}"
    relative = Path("images") / feature / digest[:2]
    if keep == "original":
        relative /= f"{digest}.orig"
        payload = data
    else:
        relative /= f"{digest}.thumb{thumb_px}.png"
        payload = thumbnail_png(data, thumb_px)
    target = home / relative
    if not target.is_file():
        write_bytes_atomic(target, payload)
    return f"image sha256:{digest} stored:{relative.as_posix()}"


def read_logged_image(reference: str, home: Path) -> tuple[str, bytes | None, str]:
    """(sha256, stored bytes or None, why none) of a prediction's reference."""
    found = REFERENCE.match(reference.strip())
    if found is None:
        return "", None, "not an image reference"
    if not found["path"]:
        return found["sha"], None, "only the hash was logged (image.log.keep: hash)"
    path = (home / found["path"]).resolve()
    if home.resolve() not in path.parents:
        return found["sha"], None, "stored path outside FLYWHEEL_HOME"
    if not path.is_file():
        return found["sha"], None, f"stored image {found['path']} is missing"
    return found["sha"], path.read_bytes(), ""

"""Atomic file writes: a file is either complete or absent."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def write_arrays_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """Save numpy arrays as safetensors, each made C-contiguous first, atomically.

    ``safetensors`` writes an array's memory as it lies: a Fortran-ordered array (such as
    scikit-learn's multinomial ``LogisticRegression.coef_``) would be read back
    transposed-scrambled. Every weight writer goes through here.
    """
    import numpy as np
    from safetensors.numpy import save

    contiguous = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    write_bytes_atomic(path, save(contiguous))

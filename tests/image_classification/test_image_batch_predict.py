"""`flywheel predict FEATURE --input FILE` for an image feature: a column of paths, each
image classified like an upload; the output keeps the image's hash, never the image."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from aiflywheel.batch.predict import predict_file
from aiflywheel.core.registry import get_task
from aiflywheel.core.versions import load
from aiflywheel.recipe import load_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from image_world import make_folder, picture, png, recipe_text  # noqa: E402


def test_an_image_feature_predicts_a_file_of_paths(tmp_path: Path) -> None:
    make_folder(tmp_path / "images")
    (tmp_path / "recipe.yaml").write_text(recipe_text("images"), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    get_task(recipe.task).train(recipe, store=open_store(), settings=get_settings(), report=print)
    model = load(recipe.feature)

    rng = np.random.default_rng(7)
    labels = sorted(model.predictor.labels)
    paths = []
    for i, label in enumerate(labels * 2):
        path = tmp_path / "new" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png(picture(label, rng)))
        paths.append(path)
    (tmp_path / "new" / "broken.png").write_bytes(b"not an image at all")
    rows = [str(p) for p in paths] + [str(tmp_path / "new" / "broken.png"), "/no/such.png"]
    source = tmp_path / "in.csv"
    source.write_text("path\n" + "\n".join(rows) + "\n", encoding="utf-8")

    result = predict_file(recipe.feature, source, tmp_path / "out.csv", progress=False)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        out = list(csv.DictReader(handle))
    assert result.rows == len(rows) and len(out) == len(rows)
    direct = model.predictor.predict([p.read_bytes() for p in paths])
    assert [r["label"] for r in out[: len(paths)]] == [p.label for p in direct]
    assert all(r["path"].startswith("image sha256:") for r in out[: len(paths) + 1])
    assert "not an image" in out[len(paths)]["error"]
    assert "cannot read" in out[-1]["error"] and not out[-1]["label"]

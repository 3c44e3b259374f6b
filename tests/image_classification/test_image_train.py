"""Training an image feature: the models, the pixel baseline, augmentation settings, the
report (confusion, calibration, confident mistakes with saliency) and GAN augmentation
decided by the gate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.core.registry import get_task
from aiflywheel.errors import RecipeError
from aiflywheel.recipe import load_recipe, parse_recipe
from aiflywheel.settings import get_settings
from aiflywheel.store import open_store
from aiflywheel.tasks.image_classification.config import AugmentConfig
from aiflywheel.tasks.image_classification.evaluate import occlusion_saliency
from aiflywheel.tasks.image_classification.models import (
    ImageClassifier,
    PixelBaseline,
    augment_batch,
    load_image_model,
    to_tensor,
)

sys.path.insert(0, str(Path(__file__).parent))
from image_world import LABELS, make_folder, picture, recipe_text  # noqa: E402


def world(n: int = 12, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = [LABELS[i % 2] for i in range(n)]
    return np.stack([picture(v, rng)[..., None] for v in labels]), labels


@pytest.mark.parametrize("architecture", ["cnn", "resnet"])
def test_both_networks_learn_the_tiny_world_and_round_trip(tmp_path, architecture) -> None:
    x, y = world(24)
    vx, vy = world(8, seed=1)
    model = ImageClassifier(LABELS, architecture=architecture, size=8, width=8).fit(
        x, y, val_x=vx, val_y=vy, epochs=15, batch_size=8, learning_rate=0.01, seed=1
    )
    assert [p.label for p in model.predict(vx)] == vy
    model.save(tmp_path / "m")
    again = load_image_model(tmp_path / "m")
    assert np.allclose(again.predict_proba(vx), model.predict_proba(vx), atol=1e-6)
    assert not (tmp_path / "m" / "model.pkl").exists()
    assert model.features(vx).shape[0] == 8


def test_pixel_baseline_learns_and_round_trips(tmp_path) -> None:
    x, y = world(24)
    baseline = PixelBaseline(LABELS, side=4).fit(x, y)
    assert [p.label for p in baseline.predict(x)] == y
    baseline.save(tmp_path / "b")
    assert np.allclose(load_image_model(tmp_path / "b").predict_proba(x), baseline.predict_proba(x))


def test_augmentation_flips_crops_and_rotates_without_changing_shape() -> None:
    import torch

    x, _ = world(4)
    batch = to_tensor(x)
    same = augment_batch(batch, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(same, batch)
    moved = augment_batch(
        batch, AugmentConfig(flip=True, crop=1, rotation=10), torch.Generator().manual_seed(0)
    )
    assert moved.shape == batch.shape and not torch.equal(moved, batch)


def test_occlusion_saliency_is_a_normalized_map_of_what_moves_the_label() -> None:
    x, y = world(24)
    model = ImageClassifier(LABELS, size=8, width=8).fit(
        x, y, val_x=x, val_y=y, epochs=15, batch_size=8, learning_rate=0.01, seed=1
    )
    top = picture("top", np.random.default_rng(5))[..., None]
    heat = occlusion_saliency(model, top, LABELS.index("top"))
    assert heat.shape == (8, 8) and heat.min() >= 0 and heat.max() == 1.0
    assert heat.std() > 0  # some patches matter more than others
    flat = np.full_like(top, 128)  # nothing to occlude: greying changes nothing
    assert occlusion_saliency(model, flat, 0).max() == 0


def test_recipe_sections_belong_to_the_image_task() -> None:
    with pytest.raises(RecipeError, match="missing required key 'image'"):
        parse_recipe({"feature": "f", "task": "image_classification"})
    with pytest.raises(RecipeError, match="train.augment section only applies to task image"):
        parse_recipe({"feature": "f", "data": {"source": "x.csv"}, "train": {"augment": {}}})
    with pytest.raises(RecipeError, match="the image section only applies"):
        parse_recipe({"feature": "f", "data": {"source": "x.csv"}, "image": {"source": "x"}})


def test_training_writes_the_report_and_gan_augmentation_is_decided_by_the_gate(
    tmp_path: Path,
) -> None:
    make_folder(tmp_path / "images", per_label=10)
    augment = ", augment: {flip: false, crop: 1, gan: {per_class: 6, epochs: 1}}"
    (tmp_path / "recipe.yaml").write_text(
        recipe_text("images", epochs=6, augment=augment), encoding="utf-8"
    )
    recipe = load_recipe(tmp_path / "recipe.yaml")
    built = get_task(recipe.task).train(
        recipe, store=open_store(), settings=get_settings(), report=lambda _: None
    )
    metrics = json.loads((built.run_dir / "metrics.json").read_text())
    gan = metrics["gan"]
    assert gan["images"] == 12 and gan["frechet_distance"] >= 0
    assert "penultimate" in gan["distance_features"] or gan["distance_features"]
    assert gan["registered"] in ("with GAN images", "without GAN images")
    assert (gan["registered"] == "with GAN images") == gan["gate"]["passed"]
    assert (built.run_dir / "model_with_gan").is_dir()
    assert (built.run_dir / "model_without_gan").is_dir()
    page = (built.run_dir / "report.html").read_text()
    assert "GAN-augmented candidate vs the plain one" in page
    assert "generated samples" in page and "confusion" in page and "calibration" in page
    assert metrics["baseline"]["name"] == "pixel-logreg"
    assert metrics["model"]["macro_f1_ci"][0] <= metrics["model"]["metrics"]["macro_f1"]


def test_the_init_template_is_a_valid_image_recipe(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from aiflywheel.cli import app

    target = tmp_path / "images.yaml"
    result = CliRunner().invoke(app, ["init", "--template", "images", "--output", str(target)])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(target)
    assert recipe.task == "image_classification" and recipe.image.architecture == "resnet"
    assert recipe.train.augment.flip and recipe.train.augment.gan is None

"""The conditional DCGAN augmentation on tiny images (8x8 and 28x28, a few epochs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from aiflywheel.errors import DataError, FlywheelError, ModelError, NotFittedError
from aiflywheel.tasks.image_classification.gan import (
    GRID_COLUMNS,
    GRID_PAD,
    ConditionalGan,
    GanAugmentation,
    augment_with_gan,
    frechet_distance,
    random_projection,
)

torch = pytest.importorskip("torch")


def _tiny_set(side: int = 8, channels: int = 1, classes: int = 3, per_class: int = 20):
    """Class c is a bright horizontal band at a class-specific height, with noise."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(classes), per_class)
    rng.shuffle(labels)
    pixels = rng.integers(0, 40, (labels.size, side, side, channels)).astype(np.uint8)
    band = side // classes
    for index, label in enumerate(labels):
        pixels[index, label * band : label * band + band] = 220
    return pixels, labels.astype(np.int64)


def _quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def tiny_result() -> GanAugmentation:
    pixels, labels = _tiny_set()
    return augment_with_gan(
        pixels, labels, num_classes=3, per_class=5, seed=3, epochs=3, report=_quiet
    )


def test_augmentation_returns_uint8_images_and_labels_per_class(tiny_result) -> None:
    assert isinstance(tiny_result, GanAugmentation)
    assert tiny_result.pixels.shape == (15, 8, 8, 1) and tiny_result.pixels.dtype == np.uint8
    assert tiny_result.labels.dtype == np.int64
    assert np.bincount(tiny_result.labels).tolist() == [5, 5, 5]
    assert tiny_result.epochs == 3
    assert tiny_result.frechet_distance >= 0
    assert "random projection of pixels" in tiny_result.distance_features
    # Not all one value: the generator draws something.
    assert tiny_result.pixels.std() > 1


def test_same_seed_same_images_other_seed_other_images() -> None:
    pixels, labels = _tiny_set()
    runs = [
        augment_with_gan(
            pixels, labels, num_classes=3, per_class=4, seed=seed, epochs=2, report=_quiet
        )
        for seed in (5, 5, 6)
    ]
    assert np.array_equal(runs[0].pixels, runs[1].pixels)
    assert runs[0].frechet_distance == runs[1].frechet_distance
    assert not np.array_equal(runs[0].pixels, runs[2].pixels)


def test_global_torch_rng_is_left_alone() -> None:
    pixels, labels = _tiny_set()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    augment_with_gan(pixels, labels, num_classes=3, per_class=2, seed=1, epochs=1, report=_quiet)
    assert torch.equal(torch.rand(3), expected)


def test_grid_png_has_one_row_per_class(tiny_result) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(tiny_result.grid_png))
    image.load()
    assert image.format == "PNG" and image.mode == "L"
    assert image.size == (
        GRID_COLUMNS * 8 + (GRID_COLUMNS + 1) * GRID_PAD,
        3 * 8 + 4 * GRID_PAD,
    )
    grid = np.asarray(image)
    # Row 1, column 0 is the first generated image of class 1.
    top = GRID_PAD + 1 * (8 + GRID_PAD)
    first = tiny_result.pixels[tiny_result.labels == 1][0][:, :, 0]
    assert np.array_equal(grid[top : top + 8, GRID_PAD : GRID_PAD + 8], first)


def test_rgb_28x28_round_trips_its_size_and_progress_is_reported() -> None:
    pixels, labels = _tiny_set(side=28, channels=3, classes=2, per_class=15)
    lines: list[str] = []
    result = augment_with_gan(
        pixels, labels, num_classes=2, per_class=3, seed=0, epochs=2, report=lines.append
    )
    assert result.pixels.shape == (6, 28, 28, 3)
    assert [line.split(":")[0] for line in lines[:2]] == ["gan epoch 1/2", "gan epoch 2/2"]
    assert "Fréchet distance" in lines[-1]


def test_odd_and_non_square_sizes_are_padded_and_cropped_back() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 11, 6, 1)).astype(np.uint8)
    labels = np.arange(20) % 2
    result = augment_with_gan(
        pixels, labels, num_classes=2, per_class=2, seed=0, epochs=1, report=_quiet
    )
    assert result.pixels.shape == (4, 11, 6, 1)


def test_large_images_are_generated_at_their_own_size() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (8, 100, 80, 3)).astype(np.uint8)
    labels = np.arange(8) % 2
    result = augment_with_gan(
        pixels, labels, num_classes=2, per_class=1, seed=0, epochs=1, report=_quiet
    )
    assert result.pixels.shape == (2, 100, 80, 3)


def test_time_budget_stops_training() -> None:
    pixels, labels = _tiny_set(per_class=40)
    result = augment_with_gan(
        pixels, labels, num_classes=3, per_class=1, seed=0, time_budget_s=0.001, report=_quiet
    )
    assert result.epochs == 0 and result.pixels.shape == (3, 8, 8, 1)


def test_caller_features_are_used_and_named() -> None:
    pixels, labels = _tiny_set()
    seen: list[int] = []

    def mean_and_spread(images: np.ndarray) -> np.ndarray:
        seen.append(images.shape[0])
        flat = images.reshape(images.shape[0], -1).astype(np.float64)
        return np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1)

    result = augment_with_gan(
        pixels,
        labels,
        num_classes=3,
        per_class=4,
        seed=0,
        epochs=1,
        features=mean_and_spread,
        features_name="mean and spread",
        report=_quiet,
    )
    assert seen == [60, 12]
    assert result.distance_features.startswith("mean and spread (2 dims)")
    real = mean_and_spread(pixels)
    fake = mean_and_spread(result.pixels)
    assert result.frechet_distance == pytest.approx(frechet_distance(real, fake))


def test_caller_features_of_the_wrong_shape_are_one_line() -> None:
    pixels, labels = _tiny_set()
    with pytest.raises(DataError, match=r"features must map 60 real images to an \(N,D\) array"):
        augment_with_gan(
            pixels,
            labels,
            num_classes=3,
            per_class=1,
            seed=0,
            epochs=1,
            features=lambda images: np.zeros(len(images)),
            report=_quiet,
        )


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    real = rng.standard_normal((500, 16))
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    # Same covariance, mean shifted by c in every dimension: distance = D * c^2.
    distances = [frechet_distance(real, real + shift) for shift in (0.5, 1.0, 2.0)]
    assert distances == pytest.approx([16 * 0.25, 16 * 1.0, 16 * 4.0], rel=1e-6)
    # A wider spread with the same mean also moves it away from zero.
    assert frechet_distance(real, real * 2.0) > 1.0


def test_frechet_distance_with_fewer_samples_than_dimensions_stays_finite() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 64)), rng.standard_normal((7, 64))
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(
    ("real", "fake", "message"),
    [
        (np.zeros((1, 4)), np.zeros((5, 4)), "needs at least 2 real samples; got 1"),
        (np.zeros((5, 4)), np.zeros((0, 4)), "needs at least 2 generated samples; got 0"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "differ in width: 4 vs 3"),
        (np.zeros(5), np.zeros((5, 3)), "must be a 2-d array"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN or infinite"),
    ],
)
def test_frechet_distance_bad_input_is_one_line(real, fake, message) -> None:
    with pytest.raises(DataError, match=message) as caught:
        frechet_distance(real, fake)
    assert "\n" not in str(caught.value)


def test_random_projection_is_fixed() -> None:
    pixels, _ = _tiny_set()
    first, second = random_projection(pixels), random_projection(pixels.copy())
    assert first.shape == (60, 64) and np.array_equal(first, second)


def test_generator_save_load_reproduces_samples(tmp_path: Path) -> None:
    pixels, labels = _tiny_set()
    gan = ConditionalGan(num_classes=3, width=16).fit(
        pixels, labels, seed=2, epochs=2, report=_quiet
    )
    before, before_labels = gan.generate_per_class(3, seed=9)
    gan.save(tmp_path / "gan")
    assert sorted(p.name for p in (tmp_path / "gan").iterdir()) == [
        "gan.json",
        "generator.safetensors",
    ]
    loaded = ConditionalGan.load(tmp_path / "gan")
    after, after_labels = loaded.generate_per_class(3, seed=9)
    assert np.array_equal(before, after) and np.array_equal(before_labels, after_labels)
    assert loaded.epochs == 2 and loaded.image_shape == (8, 8, 1)


def test_unfitted_and_missing_generators_are_one_line(tmp_path: Path) -> None:
    gan = ConditionalGan(num_classes=2)
    with pytest.raises(NotFittedError, match="only after fit"):
        gan.generate(np.array([0]), seed=0)
    with pytest.raises(NotFittedError):
        gan.save(tmp_path / "x")
    with pytest.raises(ModelError, match="holds no saved GAN"):
        ConditionalGan.load(tmp_path / "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "gan.json").write_text("{}", encoding="utf-8")
    (tmp_path / "broken" / "generator.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot be loaded"):
        ConditionalGan.load(tmp_path / "broken")


_PIXELS, _LABELS = _tiny_set()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"per_class": 0}, ModelError, "per_class must be a positive integer; got 0"),
        ({"per_class": -3}, ModelError, "per_class must be a positive integer; got -3"),
        ({"per_class": 2.5}, ModelError, "per_class must be a positive integer; got 2.5"),
        ({"num_classes": 0}, ModelError, "num_classes must be a positive integer; got 0"),
        ({"epochs": 0}, ModelError, "epochs must be a positive integer; got 0"),
        ({"time_budget_s": -1.0}, ModelError, "time_budget_s must be a positive number; got -1.0"),
        ({"labels": _LABELS + 1}, DataError, "label 3 is out of range; expected 0..2"),
        ({"labels": _LABELS - 1}, DataError, "label -1 is out of range; expected 0..2"),
        ({"labels": _LABELS[:10]}, DataError, "labels must be 60 integers"),
        ({"labels": _LABELS.astype(float)}, DataError, "labels must be 60 integers"),
        ({"num_classes": 4}, DataError, "class 3 has no training images"),
        ({"pixels": _PIXELS[:0], "labels": _LABELS[:0]}, DataError, "needs images; got an empty"),
        ({"pixels": _PIXELS.astype(np.float32)}, DataError, "must be a uint8 array"),
        ({"pixels": _PIXELS[:, :, :, 0]}, DataError, "must be a uint8 array"),
        ({"pixels": np.repeat(_PIXELS, 2, axis=3)}, DataError, "1 or 3 channels; got 2"),
        ({"pixels": _PIXELS[:, :2, :2]}, DataError, "at least 4x4; got 2x2"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, error, message) -> None:
    arguments = {
        "pixels": _PIXELS,
        "labels": _LABELS,
        "num_classes": 3,
        "per_class": 2,
        "seed": 0,
        "epochs": 1,
        "report": _quiet,
    }
    arguments.update(kwargs)
    pixels, labels = arguments.pop("pixels"), arguments.pop("labels")
    with pytest.raises(error, match=message) as caught:
        augment_with_gan(pixels, labels, **arguments)
    assert isinstance(caught.value, FlywheelError)
    assert "\n" not in str(caught.value)


def test_generate_refuses_labels_out_of_range() -> None:
    gan = ConditionalGan(num_classes=3, width=8).fit(
        _PIXELS, _LABELS, seed=0, epochs=1, report=_quiet
    )
    with pytest.raises(DataError, match="label 3 is out of range; expected 0..2"):
        gan.generate(np.array([0, 3]), seed=0)
    assert gan.generate(np.array([], dtype=np.int64), seed=0).shape == (0, 8, 8, 1)

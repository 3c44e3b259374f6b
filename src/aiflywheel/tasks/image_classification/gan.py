"""GAN augmentation: a conditional DCGAN that makes more training images per class.

The generator maps noise plus a label embedding to an image; the discriminator sees an
image plus its label embedded as an extra channel (Radford et al.'s DCGAN layout with
Mirza & Osindero's conditioning): transposed convolutions with BatchNorm and ReLU up,
strided convolutions with BatchNorm and LeakyReLU(0.2) down, Adam(2e-4, betas 0.5/0.999),
one-sided label smoothing. Plain PyTorch, trained only on the images it is given (the
training split).

Sizes: the working size is ``s0 * 2**k`` with two upsamplings for images up to 32 pixels
a side (28 -> 7*4, exact) and three up to 64; smaller or non-square images are padded
(edge pixels repeated) and the padding cropped from what is generated; larger images are
resized to 64 and generated images resized back.

:func:`augment_with_gan` trains, generates ``per_class`` images per class, draws a grid
(one row per class) and measures a Fréchet distance between real and generated images on
``features`` (the caller's, e.g. a CNN's penultimate layer) or, without it, on a fixed
seeded random projection of the pixels. Everything is deterministic for a seed and a
number of epochs on one machine and thread count; a time budget stops training early, so
how many epochs ran then depends on speed (``GanAugmentation.epochs`` says).
:class:`ConditionalGan` follows fit/generate/save/load (safetensors + JSON), so a report
can regenerate its grid from the saved generator.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiflywheel.errors import DataError, MissingExtraError, ModelError, NotFittedError

DEFAULT_EPOCHS = 30
LATENT_DIM = 64
BATCH_SIZE = 64
LEARNING_RATE = 2e-4
BETAS = (0.5, 0.999)
REAL_TARGET = 0.9  # one-sided label smoothing
PROJECTION_DIM = 64
PROJECTION_SEED = 0
MAX_SIDE = 64
GRID_COLUMNS = 10
GRID_PAD = 2
WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "gan.json"


@dataclass
class GanAugmentation:
    pixels: np.ndarray  # uint8 (M,H,W,C) synthetic images
    labels: np.ndarray  # int64 (M,)
    grid_png: bytes  # a grid of generated samples, one row per class
    frechet_distance: float  # FID-style distance, real vs generated, on `features`
    distance_features: str  # says which features the distance was computed on
    seconds: float
    epochs: int = 0  # epochs completed (fewer than asked when the time budget ran out)
    model: ConditionalGan | None = field(default=None, repr=False)  # save() it to keep it


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the train extra is installed in tests
        raise MissingExtraError("GAN augmentation", "pip install torch==2.13.0") from exc
    return torch


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ModelError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def _check_training_data(
    pixels: Any, labels: Any, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4:
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        shape = getattr(pixels, "shape", "")
        raise DataError(f"GAN pixels must be a uint8 array (N,H,W,C); got {dtype} {shape}")
    if pixels.shape[0] == 0:
        raise DataError("GAN training needs images; got an empty array")
    if pixels.shape[3] not in (1, 3):
        raise DataError(f"GAN pixels must have 1 or 3 channels; got {pixels.shape[3]}")
    if min(pixels.shape[1:3]) < 4:
        raise DataError(f"GAN images must be at least 4x4; got {pixels.shape[1]}x{pixels.shape[2]}")
    labels = np.asarray(labels)
    if labels.shape != (pixels.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"GAN labels must be {pixels.shape[0]} integers (one per image); got "
            f"{labels.dtype} {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"GAN label {bad} is out of range; expected 0..{num_classes - 1}")
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise DataError(
            f"class {int(np.argmin(counts))} has no training images; the GAN cannot learn it"
        )
    return pixels, labels.astype(np.int64)


def _layout(height: int, width: int) -> tuple[int, int, int]:
    """(upsamplings k, start size s0, working size s0 * 2**k) for an image of that size."""
    side = min(max(height, width), MAX_SIDE)
    ups = 2 if side <= 32 else 3
    start = max(2, math.ceil(side / 2**ups))
    return ups, start, start * 2**ups


def _build(num_classes: int, channels: int, ups: int, start: int, width: int, latent: int):
    torch = _torch()
    nn = torch.nn

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            top = width * 2 ** (ups - 1)
            self.embed = nn.Embedding(num_classes, latent)
            self.project = nn.Sequential(
                nn.Linear(2 * latent, top * start * start, bias=False),
                nn.BatchNorm1d(top * start * start),
                nn.ReLU(True),
            )
            layers: list[Any] = []
            for level in range(ups - 1):
                cin = top // 2**level
                layers += [
                    nn.ConvTranspose2d(cin, cin // 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(cin // 2),
                    nn.ReLU(True),
                ]
            layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
            self.up = nn.Sequential(*layers)
            self.top = top

        def forward(self, noise, labels):
            hidden = self.project(torch.cat([noise, self.embed(labels)], dim=1))
            return self.up(hidden.view(-1, self.top, start, start))

    class Discriminator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            size = start * 2**ups
            self.size = size
            self.embed = nn.Embedding(num_classes, size * size)
            layers: list[Any] = [nn.Conv2d(channels + 1, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            for level in range(ups - 1):
                cin = width * 2**level
                layers += [
                    nn.Conv2d(cin, cin * 2, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(cin * 2),
                    nn.LeakyReLU(0.2, True),
                ]
            self.down = nn.Sequential(*layers)
            self.head = nn.Linear(width * 2 ** (ups - 1) * start * start, 1)

        def forward(self, images, labels):
            label_map = self.embed(labels).view(-1, 1, self.size, self.size)
            hidden = self.down(torch.cat([images, label_map], dim=1))
            return self.head(hidden.flatten(1)).squeeze(1)

    def init(module) -> None:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    generator, discriminator = Generator(), Discriminator()
    generator.apply(init)
    discriminator.apply(init)
    return generator, discriminator


class ConditionalGan:
    """A conditional DCGAN: ``fit`` on uint8 images and labels, ``generate`` per class.

    Only the generator is saved (``generator.safetensors`` + ``gan.json``): enough to
    regenerate samples; training does not resume from a saved model.
    """

    def __init__(self, *, num_classes: int, width: int = 64, latent_dim: int = LATENT_DIM) -> None:
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.width = _positive_int(width, "GAN width")
        self.latent_dim = _positive_int(latent_dim, "GAN latent_dim")
        self.image_shape: tuple[int, int, int] | None = None
        self.epochs = 0
        self.generator = None

    # -- geometry ------------------------------------------------------------------------
    def _size(self) -> int:
        assert self.image_shape is not None
        return _layout(*self.image_shape[:2])[2]

    def _to_tensor(self, pixels: np.ndarray):
        """uint8 (N,H,W,C) -> float (N,C,S,S) in [-1, 1], padded or resized to the working size."""
        torch = _torch()
        functional = torch.nn.functional
        images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
        images = images / 127.5 - 1.0
        height, width = images.shape[2:]
        side = max(height, width)
        if side > MAX_SIDE:
            scale = MAX_SIDE / side
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            images = functional.interpolate(images, size=size, mode="bilinear", antialias=True)
            height, width = size
        target = self._size()
        top, left = (target - height) // 2, (target - width) // 2
        pad = (left, target - width - left, top, target - height - top)
        if any(pad):
            images = functional.pad(images, pad, mode="replicate")
        return images

    def _from_tensor(self, images) -> np.ndarray:
        """float (N,C,S,S) in [-1, 1] -> uint8 (N,H,W,C) of the training image shape."""
        torch = _torch()
        assert self.image_shape is not None
        height, width, _ = self.image_shape
        side = max(height, width)
        inner_h, inner_w = height, width
        if side > MAX_SIDE:
            scale = MAX_SIDE / side
            inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
        target = images.shape[2]
        top, left = (target - inner_h) // 2, (target - inner_w) // 2
        images = images[:, :, top : top + inner_h, left : left + inner_w]
        if (inner_h, inner_w) != (height, width):
            images = torch.nn.functional.interpolate(
                images, size=(height, width), mode="bilinear", align_corners=False
            )
        scaled = ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return scaled.permute(0, 2, 3, 1).contiguous().numpy()

    # -- fit ---------------------------------------------------------------------------------
    def fit(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        *,
        seed: int,
        epochs: int | None = None,
        time_budget_s: float | None = None,
        report: Callable[[str], None] = print,
    ) -> ConditionalGan:
        """Train on ``pixels`` (uint8 N,H,W,C) and ``labels`` (0..num_classes-1).

        Stops after ``epochs`` (default :data:`DEFAULT_EPOCHS` when there is no time budget)
        or when ``time_budget_s`` has passed, whichever comes first; at least one batch runs.
        """
        torch = _torch()
        pixels, labels = _check_training_data(pixels, labels, self.num_classes)
        if epochs is not None:
            epochs = _positive_int(epochs, "GAN epochs")
        if time_budget_s is not None and (
            isinstance(time_budget_s, bool)
            or not isinstance(time_budget_s, (int, float))
            or not math.isfinite(time_budget_s)
            or time_budget_s <= 0
        ):
            raise ModelError(f"GAN time_budget_s must be a positive number; got {time_budget_s!r}")
        if epochs is None and time_budget_s is None:
            epochs = DEFAULT_EPOCHS
        self.image_shape = tuple(int(v) for v in pixels.shape[1:])  # type: ignore[assignment]
        ups, start, _ = _layout(*self.image_shape[:2])
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator, discriminator = _build(
                self.num_classes, self.image_shape[2], ups, start, self.width, self.latent_dim
            )
            images = self._to_tensor(pixels)
            targets = torch.from_numpy(labels)
            loss = torch.nn.BCEWithLogitsLoss()
            opt_g = torch.optim.Adam(generator.parameters(), lr=LEARNING_RATE, betas=BETAS)
            opt_d = torch.optim.Adam(discriminator.parameters(), lr=LEARNING_RATE, betas=BETAS)
            count = images.shape[0]
            batch = min(BATCH_SIZE, count)
            done = 0
            out_of_time = False
            while not out_of_time and (epochs is None or done < epochs):
                order = torch.randperm(count)
                sums, steps = [0.0, 0.0], 0
                # Drop a last batch of one: BatchNorm cannot train on a single image.
                for first in range(0, count - (count % batch == 1), batch):
                    index = order[first : first + batch]
                    real, cls = images[index], targets[index]
                    size = real.shape[0]
                    noise = torch.randn(size, self.latent_dim)
                    fake_cls = torch.randint(0, self.num_classes, (size,))
                    fake = generator(noise, fake_cls)
                    opt_d.zero_grad()
                    d_loss = loss(
                        discriminator(real, cls), torch.full((size,), REAL_TARGET)
                    ) + loss(discriminator(fake.detach(), fake_cls), torch.zeros(size))
                    d_loss.backward()
                    opt_d.step()
                    opt_g.zero_grad()
                    g_loss = loss(discriminator(fake, fake_cls), torch.ones(size))
                    g_loss.backward()
                    opt_g.step()
                    sums[0] += float(d_loss.detach())
                    sums[1] += float(g_loss.detach())
                    steps += 1
                    if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
                        out_of_time = True
                        break
                if not out_of_time:
                    done += 1
                report(
                    f"gan epoch {done}{'' if epochs is None else f'/{epochs}'}"
                    f"{' (time budget reached mid-epoch)' if out_of_time else ''}: "
                    f"d_loss {sums[0] / max(steps, 1):.3f} g_loss {sums[1] / max(steps, 1):.3f} "
                    f"({time.perf_counter() - started:.1f} s)"
                )
        generator.eval()
        self.generator = generator
        self.epochs = done
        return self

    # -- generate ----------------------------------------------------------------------------
    def generate(self, labels: np.ndarray, *, seed: int) -> np.ndarray:
        """One uint8 image (H,W,C of the training images) per label; deterministic per seed."""
        torch = _torch()
        if self.generator is None or self.image_shape is None:
            raise NotFittedError("the GAN generates only after fit or load")
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"labels to generate must be a 1-d integer array; got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            raise DataError(f"label {bad} is out of range; expected 0..{self.num_classes - 1}")
        source = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(labels.size, self.latent_dim, generator=source)
        outputs = []
        with torch.no_grad():
            for first in range(0, labels.size, 512):
                chunk = torch.from_numpy(labels[first : first + 512].astype(np.int64))
                outputs.append(self._from_tensor(self.generator(noise[first : first + 512], chunk)))
        if not outputs:
            return np.zeros((0, *self.image_shape), dtype=np.uint8)
        return np.concatenate(outputs)

    def generate_per_class(self, per_class: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``per_class`` images of each class, class by class: (uint8 pixels, int64 labels)."""
        per_class = _positive_int(per_class, "GAN per_class")
        labels = np.repeat(np.arange(self.num_classes, dtype=np.int64), per_class)
        return self.generate(labels, seed=seed), labels

    # -- save / load -------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write ``generator.safetensors`` and ``gan.json`` into ``directory``, atomically."""
        from aiflywheel.files import write_arrays_atomic, write_json_atomic

        if self.generator is None or self.image_shape is None:
            raise NotFittedError("the GAN can be saved only after fit")
        directory = Path(directory)
        state = {
            name: value.detach().cpu().numpy()
            for name, value in self.generator.state_dict().items()
        }
        write_arrays_atomic(directory / WEIGHTS_FILE, state)
        write_json_atomic(
            directory / CONFIG_FILE,
            {
                "kind": "conditional_dcgan",
                "num_classes": self.num_classes,
                "width": self.width,
                "latent_dim": self.latent_dim,
                "image_shape": list(self.image_shape),
                "epochs": self.epochs,
            },
        )
        return directory

    @classmethod
    def load(cls, directory: Path) -> ConditionalGan:
        """Read back what :meth:`save` wrote."""
        torch = _torch()
        from safetensors.numpy import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelError(f"{directory} holds no saved GAN ({CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            gan = cls(
                num_classes=config["num_classes"],
                width=config["width"],
                latent_dim=config["latent_dim"],
            )
            height, width, channels = (int(v) for v in config["image_shape"])
            gan.image_shape = (height, width, channels)
            gan.epochs = int(config.get("epochs", 0))
            ups, start, _ = _layout(height, width)
            generator, _ = _build(gan.num_classes, channels, ups, start, gan.width, gan.latent_dim)
            state = {
                name: torch.from_numpy(value)
                for name, value in load_file(str(weights_path)).items()
            }
            generator.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{directory} holds a GAN that cannot be loaded: {first}") from exc
        generator.eval()
        gan.generator = generator
        return gan


# -- grid and distance -----------------------------------------------------------------------
def sample_grid(
    pixels: np.ndarray, labels: np.ndarray, num_classes: int, *, columns: int = GRID_COLUMNS
) -> bytes:
    """A PNG grid: row ``c`` holds the first ``columns`` images of class ``c`` (blank if fewer).

    Size: ``columns*W + (columns+1)*2`` wide, ``num_classes*H + (num_classes+1)*2`` high.
    """
    from PIL import Image

    columns = _positive_int(columns, "grid columns")
    _, height, width, channels = pixels.shape
    pad = GRID_PAD
    canvas = np.full(
        (num_classes * (height + pad) + pad, columns * (width + pad) + pad, channels), 128, np.uint8
    )
    for cls in range(num_classes):
        for column, image in enumerate(pixels[labels == cls][:columns]):
            top, left = pad + cls * (height + pad), pad + column * (width + pad)
            canvas[top : top + height, left : left + width] = image
    buffer = io.BytesIO()
    Image.fromarray(canvas[:, :, 0] if channels == 1 else canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def random_projection(pixels: np.ndarray, *, dims: int = PROJECTION_DIM) -> np.ndarray:
    """Pixels scaled to [0,1], projected by a fixed Gaussian matrix (seed 0): (N, dims)."""
    flat = pixels.reshape(pixels.shape[0], -1).astype(np.float64) / 255.0
    matrix = np.random.default_rng(PROJECTION_SEED).standard_normal((flat.shape[1], dims))
    return flat @ (matrix / math.sqrt(flat.shape[1]))


def frechet_distance(real: np.ndarray, generated: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N,D) feature sets (FID's formula).

    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))``; the matrix square root's tiny
    imaginary part is dropped, a singular product is regularised, and the result is
    clipped at 0. Each set needs at least 2 rows.
    """
    from scipy import linalg

    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    for name, value in (("real", real), ("generated", generated)):
        if value.ndim != 2:
            raise DataError(f"{name} features must be a 2-d array (N,D); got shape {value.shape}")
        if value.shape[0] < 2:
            raise DataError(
                f"the Fréchet distance needs at least 2 {name} samples; got {value.shape[0]}"
            )
        if not np.isfinite(value).all():
            raise DataError(f"{name} features contain NaN or infinite values")
    if real.shape[1] != generated.shape[1]:
        raise DataError(
            f"real and generated features differ in width: {real.shape[1]} vs {generated.shape[1]}"
        )
    mu1, mu2 = real.mean(axis=0), generated.mean(axis=0)
    s1 = np.atleast_2d(np.cov(real, rowvar=False))
    s2 = np.atleast_2d(np.cov(generated, rowvar=False))
    root = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(root).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        root = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    root = np.real(root)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))
    return max(value, 0.0)


def _features_of(
    features: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, what: str
) -> np.ndarray:
    values = np.asarray(features(pixels))
    if values.ndim != 2 or values.shape[0] != pixels.shape[0]:
        raise DataError(
            f"features must map {pixels.shape[0]} {what} images to an (N,D) array; got shape "
            f"{values.shape}"
        )
    return values


def augment_with_gan(
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    per_class: int,
    seed: int,
    epochs: int | None = None,
    time_budget_s: float | None = None,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    features_name: str = "the caller's features",
    report: Callable[[str], None] = print,
) -> GanAugmentation:
    """Train a conditional DCGAN on the given (training-split) images; generate per_class
    images per class. `features` maps uint8 images -> (N,D) float features (img-task passes
    the trained plain CNN's penultimate layer); None -> a fixed random-projection of pixels,
    and `distance_features` says so.

    The distance compares the given (training) images with the generated ones;
    ``features_name`` names the caller's features in ``distance_features``.
    """
    started = time.perf_counter()
    num_classes = _positive_int(num_classes, "num_classes")
    per_class = _positive_int(per_class, "GAN per_class")
    pixels, labels = _check_training_data(pixels, labels, num_classes)
    gan = ConditionalGan(num_classes=num_classes).fit(
        pixels, labels, seed=seed, epochs=epochs, time_budget_s=time_budget_s, report=report
    )
    synthetic, synthetic_labels = gan.generate_per_class(per_class, seed=seed + 1)
    if features is None:
        real_features, fake_features = random_projection(pixels), random_projection(synthetic)
        described = (
            f"a fixed random projection of pixels ({PROJECTION_DIM} dims, seed {PROJECTION_SEED})"
        )
    else:
        real_features = _features_of(features, pixels, "real")
        fake_features = _features_of(features, synthetic, "generated")
        described = f"{features_name} ({real_features.shape[1]} dims)"
    distance = frechet_distance(real_features, fake_features)
    described += f"; {pixels.shape[0]} training images vs {synthetic.shape[0]} generated"
    report(f"gan: Fréchet distance {distance:.3f} on {described}")
    return GanAugmentation(
        pixels=synthetic,
        labels=synthetic_labels,
        grid_png=sample_grid(synthetic, synthetic_labels, num_classes),
        frechet_distance=distance,
        distance_features=described,
        seconds=time.perf_counter() - started,
        epochs=gan.epochs,
        model=gan,
    )

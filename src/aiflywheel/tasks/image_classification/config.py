"""The image task's recipe settings: ``image:`` (source, size, limits, model, log) and
``train.augment`` (flips, crops, rotations, GAN samples)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GanConfig(_Strict):
    """Synthetic training images from a conditional DCGAN trained on the training split."""

    per_class: int = Field(..., ge=1, le=100_000, description="Generated images per class.")
    epochs: int | None = Field(None, ge=1, le=1000, description="GAN epochs; null: its default.")
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop GAN training after this many seconds; null: no limit."
    )


class AugmentConfig(_Strict):
    """Training-time augmentation of images (tasks with image input only)."""

    flip: bool = Field(
        False,
        description="Random horizontal flips; only where labels allow it (not digits or text).",
    )
    crop: int = Field(
        0, ge=0, le=64, description="Random crops: pad by this many pixels, crop back (0: off)."
    )
    rotation: float = Field(
        0.0, ge=0, le=45, description="Random rotations of at most this many degrees (0: off)."
    )
    gan: GanConfig | None = Field(
        None, description="Add GAN-generated images per class to the training split."
    )


class ImageLimits(_Strict):
    """What an image may be, in training data and in requests."""

    max_bytes: int = Field(
        10_000_000, ge=1024, description="Largest encoded image accepted (requests: 413)."
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Most pixels (width x height) an image may declare; more is treated as a "
        "decompression bomb and refused before decoding (requests: 422).",
    )
    min_side: int = Field(
        2, ge=1, description="Smallest width or height accepted (a 1x1 image says nothing)."
    )
    max_images: int = Field(64, ge=1, description="Most images in one predict request.")


class PredictionLogConfig(_Strict):
    """What the prediction log keeps of a served image (``predictions.text`` is a reference)."""

    keep: Literal["thumbnail", "original", "hash"] = Field(
        "thumbnail",
        description="'thumbnail': the sha256 and a small PNG (the default; feedback can retrain "
        "from it); 'original': the uploaded bytes too; 'hash': the sha256 only (feedback can "
        "then not be learned from).",
    )
    thumbnail_px: int = Field(
        64, ge=8, le=512, description="Longest side of the stored thumbnail, in pixels."
    )


class ImageConfig(_Strict):
    """An image classifier (task image_classification): data, input size, model, limits."""

    source: str = Field(
        ...,
        description="A folder with one sub-folder per label, a CSV/JSONL file of image paths "
        "(relative to that file) and labels, or a zip holding either; relative to the recipe.",
    )
    format: Literal["auto", "folder", "csv", "jsonl", "zip"] = Field(
        "auto", description="How to read the source; 'auto' decides by what the path is."
    )
    path_column: str = Field("path", description="CSV/JSONL column with the image path.")
    label_column: str = Field("label", description="CSV/JSONL column with the label.")
    size: int = Field(28, ge=4, le=512, description="Images are resized to size x size.")
    channels: Literal[1, 3] = Field(1, description="1: grayscale, 3: RGB.")
    architecture: Literal["cnn", "resnet"] = Field(
        "cnn",
        description="'cnn': the small convolutional network of the MNIST example; 'resnet': a "
        "compact residual network (3 stages of basic blocks).",
    )
    width: int = Field(32, ge=2, le=256, description="Channels of the first convolution.")
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate.")
    wrong_mode: Literal["convert", "drop"] = Field(
        "convert",
        description="CMYK, 16-bit and palette images: 'convert' to 8-bit grayscale/RGB (16-bit "
        "keeps the top 8 bits) or 'drop' them (counted in the data report).",
    )
    min_images_per_label: int = Field(
        3, ge=3, description="Labels with fewer images are dropped (one per split at least)."
    )
    near_duplicate_bits: int = Field(
        2,
        ge=0,
        le=16,
        description="Perceptual hashes (64-bit dHash) this many bits apart or fewer count as "
        "near duplicates (reported; exact duplicates are removed).",
    )
    baseline_size: int = Field(
        14, ge=2, le=64, description="The pixel baseline's input: images downscaled to this."
    )
    limits: ImageLimits = Field(default_factory=ImageLimits, description="Size limits.")
    log: PredictionLogConfig = Field(
        default_factory=PredictionLogConfig, description="What the prediction log keeps."
    )

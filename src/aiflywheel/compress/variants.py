"""The variant registry: a variant's name -> how it is built.

A builder is one small function ``build(ctx, model_dir)``: it writes the variant into
``model_dir`` and returns it (anything with ``predict_proba`` and ``labels``), or raises
``VariantSkipped`` when it cannot be built here. ``ctx`` (a ``BuildContext``) holds what
every builder shares: the parent and its loaded model, the work folder, the splits, the
recipe and the report function, plus products several variants reuse (the parent's ONNX
export, the distilled student), each made once through ``ctx.once``. The stage
(``aiflywheel.compress.stage``) evaluates, times, gates and registers whatever a builder
returns, the same way for every variant.

Adding a variant: one builder below, one line in ``VARIANTS``, and its name in
``aiflywheel.recipe.CompressVariant``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiflywheel.compress.distill import DistillSettings, distill_student, unlabeled_texts
from aiflywheel.compress.onnx import (
    OPSET,
    convert_fp16,
    export_onnx,
    fp16_unavailable_reason,
    quantize_int8_checked,
)
from aiflywheel.compress.prune import prune_top_layers, recovery_settings
from aiflywheel.data.dataset import Dataset
from aiflywheel.errors import ModelError
from aiflywheel.tasks.text_classification.models.onnx_classifier import OnnxClassifier

if TYPE_CHECKING:
    from aiflywheel.compress.stage import Parent
    from aiflywheel.recipe import CompressConfig, Recipe

Report = Callable[[str], None]


class VariantSkipped(Exception):
    """A builder's way of saying its variant is not built here (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class BuildContext:
    """What every builder shares (one per compress run)."""

    parent: Parent
    source: Any  # the parent, loaded as a FinetunedClassifier
    work_dir: Path
    train: Dataset
    val: Dataset
    test: Dataset
    agreement_texts: list[str]  # int8 is checked against fp32 on these, never the test split
    report: Report
    _made: dict[str, Any] = field(default_factory=dict)

    @property
    def recipe(self) -> Recipe:
        return self.parent.recipe

    @property
    def config(self) -> CompressConfig:
        return self.parent.recipe.compress

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` the first time ``key`` is asked for, the same product afterwards."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def int8(self, onnx_dir: Path, model_dir: Path) -> OnnxClassifier:
        """The fp32 graph in ``onnx_dir`` quantized to int8 in ``model_dir``, agreement-checked."""
        return quantize_int8_checked(
            onnx_dir,
            model_dir,
            texts=self.agreement_texts,
            min_agreement=self.config.int8_min_agreement,
            threads=self.config.threads,
            report=self.report,
        )


# -- shared products ------------------------------------------------------------------------


def parent_onnx(ctx: BuildContext) -> Path:
    """The parent's fp32 ONNX export: in the ``onnx`` variant's folder when that variant is
    built, else in scratch (``.export``); exported once."""

    def export() -> Path:
        where = "onnx" if "onnx" in ctx.config.variants else ".export"
        exported = ctx.work_dir / where / "model"
        ctx.report(f"exporting v{ctx.parent.version} to ONNX (opset {OPSET})")
        export_onnx(ctx.source, exported, texts=ctx.test.texts[:8], threads=ctx.config.threads)
        return exported

    return ctx.once("onnx", export)


def int8_source(ctx: BuildContext, classifier, key: str) -> Path:
    """The fp32 graph to quantize for ``classifier``: exported with attention, LayerNorm
    and GELU fused (``compress.fuse_attention``) when the fused graph passes the export
    check, else the plain export (the reason is reported). Made once per ``key``."""

    def export() -> Path:
        if ctx.config.fuse_attention:
            fused = ctx.work_dir / f".fused-{key}" / "model"
            try:
                made = export_onnx(
                    classifier,
                    fused,
                    texts=ctx.test.texts[:8],
                    threads=ctx.config.threads,
                    fused=True,
                )
            except ModelError as exc:
                ctx.report(f"attention fusion not used: {exc}")
            else:
                counts = ", ".join(
                    f"{n} {c}" for n, c in (made.quantization or {})["fused"].items()
                )
                ctx.report(f"fused the {key} graph ({counts}); it agrees with torch")
                return fused
        if key == "parent":
            return parent_onnx(ctx)
        plain = ctx.work_dir / f".export-{key}" / "model"
        export_onnx(classifier, plain, texts=ctx.test.texts[:8], threads=ctx.config.threads)
        return plain

    return ctx.once(f"int8-source-{key}", export)


def student(ctx: BuildContext):
    """The distilled student: in the ``distill`` variant's folder when that variant is
    built, else in scratch (``.distill``); trained once."""

    def distill():
        config, recipe = ctx.config, ctx.recipe
        where = "distill" if "distill" in config.variants else ".distill"
        extra = unlabeled_texts(recipe, ctx.parent.run_dir / "splits", base_dir=Path.cwd())
        ctx.report(
            f"distilling v{ctx.parent.version} into a {config.distill_layers}-layer student "
            f"on {len(ctx.train)} training rows and {len(extra)} unlabeled texts"
        )
        return distill_student(
            ctx.source,
            ctx.work_dir / where / "model",
            train=ctx.train,
            val=ctx.val,
            settings=DistillSettings(
                keep_layers=config.distill_layers,
                epochs=config.distill_epochs,
                batch_size=recipe.train.batch_size,
                learning_rate=config.distill_learning_rate,
                temperature=config.distill_temperature,
                soft_weight=config.distill_soft_weight,
                seed=recipe.seed,
                unlabeled_texts=extra,
            ),
            work_dir=ctx.work_dir / ".distill-work",
            report=ctx.report,
        )

    return ctx.once("student", distill)


# -- the builders ---------------------------------------------------------------------------


def build_onnx(ctx: BuildContext, model_dir: Path):
    parent_onnx(ctx)  # exported straight into this variant's folder
    return OnnxClassifier.load(model_dir, threads=ctx.config.threads)


def build_int8(ctx: BuildContext, model_dir: Path):
    exported = int8_source(ctx, ctx.source, "parent")
    ctx.report("quantizing the ONNX graph to int8 (dynamic, ONNX Runtime)")
    return ctx.int8(exported, model_dir)


def build_fp16(ctx: BuildContext, model_dir: Path):
    reason = fp16_unavailable_reason()
    if reason is not None:
        raise VariantSkipped(reason)
    convert_fp16(parent_onnx(ctx), model_dir)
    return OnnxClassifier.load(model_dir, threads=ctx.config.threads)


def build_prune(ctx: BuildContext, model_dir: Path):
    config = ctx.config
    ctx.report(
        f"pruning v{ctx.parent.version} to its bottom {config.prune_keep_layers} layers, "
        f"then {config.prune_recovery_epochs:g} epoch(s) of recovery fine-tuning"
    )
    return prune_top_layers(
        ctx.source,
        config.prune_keep_layers,
        model_dir,
        train=ctx.train,
        val=ctx.val,
        recovery_epochs=config.prune_recovery_epochs,
        max_rows=config.prune_recovery_max_rows,
        settings=recovery_settings(ctx.recipe, ctx.parent.row.method),
        work_dir=ctx.work_dir / ".prune-work",
    )


def build_distill(ctx: BuildContext, model_dir: Path):
    return student(ctx)  # trained straight into this variant's folder


def build_distill_int8(ctx: BuildContext, model_dir: Path):
    trained = student(ctx)
    ctx.report("exporting the student to ONNX and quantizing it to int8")
    return ctx.int8(int8_source(ctx, trained, "student"), model_dir)


# -- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """How one variant is built, and what the stage records about it."""

    build: Callable[[BuildContext, Path], Any]
    tag: Callable[[CompressConfig], str] | None = None  # method suffix; default: the name
    layers: Callable[[CompressConfig], int] | None = None  # default: the parent's
    keep_layers: str | None = None  # the config field checked against the parent's layers
    onnx: bool = False  # needs onnx, onnxruntime and onnxscript


VARIANTS: dict[str, Variant] = {
    "onnx": Variant(build_onnx, onnx=True),
    "int8": Variant(build_int8, onnx=True),
    "fp16": Variant(build_fp16, onnx=True),
    "prune": Variant(
        build_prune,
        tag=lambda c: f"prune{c.prune_keep_layers}",
        layers=lambda c: c.prune_keep_layers,
        keep_layers="prune_keep_layers",
    ),
    "distill": Variant(
        build_distill,
        tag=lambda c: f"distill{c.distill_layers}",
        layers=lambda c: c.distill_layers,
        keep_layers="distill_layers",
    ),
    "distill-int8": Variant(
        build_distill_int8,
        tag=lambda c: f"distill{c.distill_layers}+int8",
        layers=lambda c: c.distill_layers,
        keep_layers="distill_layers",
    ),
}

# Folders builders use as scratch under the work folder; dropped when the run commits.
SCRATCH = (
    ".export",
    ".export-student",
    ".fused-parent",
    ".fused-student",
    ".distill",
    ".distill-work",
    ".prune-work",
)

__all__ = ["SCRATCH", "VARIANTS", "BuildContext", "Variant", "VariantSkipped"]

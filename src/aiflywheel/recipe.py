"""The recipe: one YAML file that declares an AI feature and how its data is prepared.

``load_recipe(path)`` reads and validates it; every field has a description (see
``flywheel recipe schema``) and unknown keys are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from aiflywheel.core.registry import DEFAULT_TASK, TASKS, check_task_name, get_task
from aiflywheel.errors import RecipeError
from aiflywheel.tasks.assistant.config import AssistantConfig
from aiflywheel.tasks.image_classification.config import AugmentConfig, ImageConfig
from aiflywheel.tasks.text_generation.config import GenerationConfig
from aiflywheel.tasks.text_to_text.config import TextToTextConfig

PII_TYPE_NAMES = ("email", "phone", "cn_id", "bank_card", "ip", "url_secret")
PiiType = Literal["email", "phone", "cn_id", "bank_card", "ip", "url_secret"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnMapping(_Strict):
    """Which source columns hold the text, the label, a row id and metadata."""

    text: str | list[str] = Field(
        "text",
        description="Column with the input text, or a list of columns (e.g. [title, content]) "
        "joined in that order with text_separator into one text; empty cells are skipped.",
    )
    text_separator: str = Field(
        "\n",
        description="Joins the text columns when data.columns.text lists several; a newline "
        "by default (clean.collapse_whitespace turns it into one space).",
    )
    label: str | None = Field(
        "label", description="Column with the label; null for unlabeled data."
    )
    id: str | None = Field(
        None,
        description="Column with a unique row id; null derives a stable id from the text.",
    )
    meta: list[str] = Field(
        default_factory=list,
        description="Extra columns kept as metadata (slices for fairness views, group_by).",
    )

    @field_validator("text", mode="before")
    @classmethod
    def _text_is_names(cls, value: Any) -> Any:
        if isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(name, str) for name in value)
        ):
            return value
        raise ValueError("must be a column name or a list of column names")

    @field_validator("text")
    @classmethod
    def _text_columns_named_once(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            return value
        if not value:
            raise ValueError("list at least one column, e.g. [title, content]")
        if any(not name for name in value):
            raise ValueError("a text column name is empty")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
        return value

    @model_validator(mode="after")
    def _label_is_not_text(self) -> ColumnMapping:
        if self.label is not None and self.label in self.text_columns:
            raise ValueError(
                f"label column {self.label!r} is also a text column "
                f"(data.columns.text: {self.text_columns}); the model would see the answer"
            )
        return self

    @property
    def text_columns(self) -> list[str]:
        """The text column names, one or more, in joining order."""
        return [self.text] if isinstance(self.text, str) else list(self.text)


class DataConfig(_Strict):
    """Where the data comes from and how to read it."""

    source: str = Field(
        ...,
        description=(
            "A file path (relative to the recipe file) or a built-in demo source: "
            "'demo:zh-reviews' or 'demo:en-reviews'."
        ),
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "json", "parquet", "xlsx"] = Field(
        "auto", description="File format; 'auto' decides by the file extension."
    )
    encoding: str = Field(
        "auto",
        description="Text encoding; 'auto' detects UTF-8, UTF-8 with BOM, UTF-16 and GBK/GB18030.",
    )
    delimiter: str | None = Field(
        None, description="CSV delimiter; null sniffs among , tab ; |.", min_length=1, max_length=1
    )
    sheet: str | None = Field(None, description="Excel sheet name; null takes the first sheet.")
    columns: ColumnMapping = Field(
        default_factory=ColumnMapping, description="Column mapping by name."
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rename raw label values, e.g. {'1': 'negative', '5': 'positive'}.",
    )
    sample: int | None = Field(
        None, gt=0, description="Keep a random sample of this many rows (seeded); null keeps all."
    )


class CleanConfig(_Strict):
    """Normalization and row filters."""

    unicode_nfkc: bool = Field(
        True, description="Apply Unicode NFKC (full-width to half-width letters and digits)."
    )
    strip_html: bool = Field(True, description="Remove HTML tags and decode HTML entities.")
    collapse_whitespace: bool = Field(
        True, description="Collapse runs of whitespace to one space and trim the ends."
    )
    min_chars: int = Field(2, ge=0, description="Drop rows shorter than this (after cleaning).")
    max_chars: int = Field(
        5000,
        gt=0,
        description="Longest text in characters (after cleaning); longer rows are truncated "
        "or dropped as too_long says, and the data report counts them per label.",
    )
    too_long: Literal["truncate", "drop"] = Field(
        "truncate",
        description="Rows longer than max_chars: 'truncate' keeps their first max_chars "
        "characters (after PII redaction, never cutting a placeholder or a combining mark "
        "apart); 'drop' drops them as too_long.",
    )
    duplicates: Literal["near", "exact", "off"] = Field(
        "near",
        description=(
            "Drop duplicates: 'exact' (same cleaned text), 'near' (also same text up to case, "
            "punctuation, spaces, and near-identical texts by character-shingle similarity)."
        ),
    )
    near_duplicate_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Jaccard similarity of character 3-grams above which two texts are near "
        "duplicates (used when duplicates is 'near').",
    )
    conflicting_labels: Literal["drop", "majority", "keep"] = Field(
        "drop",
        description=(
            "When the same (normalized) text carries different labels: 'drop' all copies, "
            "keep the 'majority' label (drop on a tie), or 'keep' every copy (flagged only)."
        ),
    )


class PiiConfig(_Strict):
    """Personal data detection and redaction."""

    mode: Literal["redact", "mask", "drop_row", "off"] = Field(
        "redact",
        description=(
            "'redact' replaces with typed placeholders like <PHONE>; 'mask' hides part "
            "(138****5678); 'drop_row' drops rows with any hit; 'off' skips detection."
        ),
    )
    types: list[PiiType] = Field(
        default_factory=lambda: list(PII_TYPE_NAMES),
        description="PII types to detect: " + ", ".join(PII_TYPE_NAMES) + ".",
    )


class SplitConfig(_Strict):
    """Train/validation/test split."""

    train: float = Field(0.8, gt=0, lt=1, description="Fraction of rows for training.")
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of rows for validation.")
    test: float = Field(0.1, gt=0, lt=1, description="Fraction of rows for the frozen test set.")
    stratify: bool = Field(True, description="Keep label proportions equal across splits.")
    group_by: str | None = Field(
        None,
        description="A metadata column (e.g. user id): all rows of a group land in one split.",
    )
    k_folds: int | None = Field(
        None,
        ge=2,
        le=20,
        description="Also write k-fold cross-validation indices over train+val; null for none.",
    )
    column: str | None = Field(
        None,
        description="A metadata column holding each row's own split (train, val or dev, "
        "test), for data that comes split; the fractions are then not used.",
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions train+val+test must sum to 1, got "
                f"{self.train}+{self.val}+{self.test}={total:g}"
            )
        return self


class ReportConfig(_Strict):
    """Thresholds behind the data-quality warnings."""

    min_examples_per_label: int = Field(
        100, ge=1, description="Warn when a label has fewer examples than this."
    )
    max_imbalance_ratio: float = Field(
        10.0, gt=1, description="Warn when the largest label outnumbers the smallest by more."
    )


class ModelConfig(_Strict):
    """Which encoder to start from and how to train it."""

    name: str = Field(
        "e5-small",
        description="A catalog alias (see `flywheel models catalog`: minilm, e5-small), a local "
        "transformers folder, or a Hugging Face id (fetched only with FLYWHEEL_ALLOW_DOWNLOAD=1).",
    )
    method: Literal["auto", "head", "stacked", "finetune", "lora"] = Field(
        "auto",
        description="'head': frozen encoder features + logistic regression (fast on CPU); "
        "'stacked': out-of-fold TF-IDF log-probabilities + encoder features -> logistic "
        "regression; 'finetune': fine-tuning with the HF Trainer (frozen bottom layers "
        "cached); 'lora': PEFT LoRA adapters; 'auto': on CPU tries tfidf, head, stacked "
        "and top-layer finetune within train.time_budget_minutes and keeps the best on "
        "validation (the table is logged); with a GPU, finetune.",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        le=512,
        description="Maximum tokens per text; null takes the 95th percentile of training-text "
        "token lengths (at most 256).",
    )


class MlmPretrainConfig(_Strict):
    """Masked-language-model training of the encoder on domain text before fine-tuning."""

    texts: str = Field(
        ...,
        description="Unlabeled domain texts added to the feature's own training texts: a .txt "
        "file (one text per line), a .jsonl file (field `text_field`), a .csv file (column "
        "`text_field`), a folder of such files, or a demo source such as "
        "'demo:zh-reviews-unlabeled'. Texts of the validation and test splits are always "
        "removed.",
    )
    text_field: str = Field(
        "text", min_length=1, description="The jsonl field or csv column holding the text."
    )
    minutes: float = Field(
        10.0, gt=0, le=24 * 60, description="Time budget of the MLM training, in minutes."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many MLM steps even within the time budget."
    )
    mask_probability: float = Field(
        0.15,
        gt=0,
        lt=1,
        description="Share of tokens masked; whole words (jieba words for Chinese, words for "
        "other text) are masked together, 80% [MASK], 10% a random token, 10% unchanged.",
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Texts per MLM step.")
    learning_rate: float = Field(5e-5, gt=0, lt=1, description="AdamW learning rate.")
    max_length: int = Field(128, ge=8, le=512, description="Tokens per text (longer are cut).")
    max_texts: int | None = Field(
        None, ge=10, description="Use a seeded sample of at most this many domain texts."
    )
    heldout_texts: int = Field(
        256,
        ge=0,
        description="Unlabeled texts held out of MLM training to measure the masked-token loss "
        "(and perplexity) before and after.",
    )

    @field_validator("texts")
    @classmethod
    def _texts_is_a_source(cls, value: str) -> str:
        from aiflywheel.data.unlabeled import check_unlabeled_source

        check_unlabeled_source(value)
        return value


class PretrainConfig(_Strict):
    """Continued pre-training of the encoder before the classifier is trained."""

    mlm: MlmPretrainConfig = Field(
        ..., description="Masked-language-model training on domain texts."
    )


class TrainConfig(_Strict):
    """Training options (used by finetune and lora; head uses batch_size and class_weights)."""

    epochs: float = Field(3.0, gt=0, le=100, description="Passes over the training rows.")
    batch_size: int = Field(16, ge=1, le=1024, description="Rows per training step.")
    learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Peak learning rate; null: 5e-5 finetune, 5e-4 lora."
    )
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps for LR warmup.")
    eval_every_steps: int | None = Field(
        None, ge=1, description="Evaluate on validation every N steps; null: once per epoch."
    )
    early_stopping_patience: int = Field(
        2, ge=1, description="Stop after this many evaluations without a better val macro-F1."
    )
    class_weights: bool = Field(
        True, description="Weigh the loss by inverse label frequency (helps rare labels)."
    )
    max_train_samples: int | None = Field(
        None, ge=10, description="Train on a seeded sample of at most this many rows; null: all."
    )
    freeze_embeddings: bool = Field(
        True,
        description="Keep the word-embedding matrix frozen when fine-tuning (much faster on CPU "
        "for large-vocabulary models, usually no loss in quality).",
    )
    freeze_layers: int = Field(
        0,
        ge=0,
        description="Freeze the bottom N transformer layers when fine-tuning: no backward pass "
        "through them, so each step is cheaper on CPU; the top layers and the head still learn.",
    )
    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="LoRA dropout.")
    time_budget_minutes: float = Field(
        10.0,
        gt=0,
        description="For method 'auto' on CPU: minutes for the whole run (from data check to "
        "evaluation); candidates that do not fit on measured throughput are skipped.",
    )
    cache_frozen_layers: bool = Field(
        True,
        description="With freeze_layers (and frozen embeddings), compute the frozen bottom "
        "layers once per text and cache them on disk, so each epoch runs only the top layers.",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; null uses every core."
    )
    pretrain: PretrainConfig | None = Field(
        None,
        description="Domain-adaptive pre-training of the encoder (text classification): the "
        "run trains the classifier with and without it and registers the one the gate prefers.",
    )
    augment: AugmentConfig | None = Field(
        None,
        description="Augmentation of training images (flips, crops, rotations, GAN samples); "
        "tasks with image input only.",
    )


class EvaluateConfig(_Strict):
    """Evaluation options."""

    bootstrap_resamples: int = Field(
        1000, ge=100, le=100_000, description="Resamples for confidence intervals."
    )
    slices: list[str] | None = Field(
        None, description="Metadata columns to report per-slice metrics for; null: all meta."
    )
    min_slice_rows: int = Field(20, ge=1, description="Slices with fewer test rows are not scored.")
    cross_validation: bool = Field(
        False, description="Also run k-fold cross-validation (k = split.k_folds, default 5)."
    )
    explain_mistakes: int = Field(
        10, ge=0, le=200, description="Most confident mistakes shown with token attributions."
    )


class GateConfig(_Strict):
    """When a retrained candidate may replace the champion (``flywheel retrain``)."""

    min_macro_f1_gain: float = Field(
        0.0,
        ge=-100,
        le=100,
        description="Minimum macro-F1 gain of the candidate over the champion, in points "
        "(0.5 = half a point), on the frozen test set plus the held-out feedback.",
    )
    require_significance: bool = Field(
        True,
        description="Also require the paired-bootstrap 95% CI of the gain to lie above zero "
        "(the candidate is measurably better, not better by luck).",
    )
    max_slice_drop: float = Field(
        3.0,
        ge=0,
        le=100,
        description="Refuse when any slice (metadata value, language, held-out feedback) loses "
        "more than this many macro-F1 points against the champion.",
    )
    feedback_holdout: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of accepted feedback kept out of training to evaluate both versions "
        "on live traffic (chosen by a hash of the feedback id, so stable across retrains).",
    )
    min_feedback: int = Field(
        1,
        ge=0,
        description="Retrain only when at least this many accepted feedback items are new.",
    )


CompressVariant = Literal["onnx", "int8", "fp16", "prune", "distill", "distill-int8"]


class CompressConfig(_Strict):
    """Smaller, faster variants of a fine-tuned version (``flywheel compress``), each gated."""

    variants: list[CompressVariant] = Field(
        default_factory=lambda: ["onnx", "int8"],
        min_length=1,
        description="Variants to build, each registered as its own version: 'onnx' (the model "
        "exported to ONNX, run by ONNX Runtime), 'int8' (dynamic int8 quantization of the ONNX "
        "model), 'fp16' (half precision ONNX; built only when a GPU is present, skipped with a "
        "reason otherwise), 'prune' (the top encoder layers dropped, then a short recovery "
        "fine-tune; kept as a torch model that can be compressed further), 'distill' (a "
        "student with distill_layers of the encoder's layers trained on the parent's soft "
        "labels), 'distill-int8' (that student exported to ONNX and quantized to int8).",
    )
    max_macro_f1_drop: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Gate: the most macro-F1 points a variant may lose against its parent on the "
        "parent's frozen test split; a variant that loses more is registered as rejected and "
        "cannot be promoted without force.",
    )
    min_agreement: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Gate: the least share of the parent's test rows on which a variant must "
        "predict the parent's label; a variant that agrees less is registered as rejected.",
    )
    prune_keep_layers: int = Field(
        8,
        description="Encoder layers a 'prune' variant keeps (the bottom ones): at least 1 and "
        "fewer than the model has.",
    )
    prune_recovery_epochs: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Epochs of recovery fine-tuning of a pruned model on the parent's training "
        "split; 0 keeps the pruned model as it is.",
    )
    prune_recovery_max_rows: int | None = Field(
        None,
        ge=10,
        description="Recovery fine-tuning uses a seeded sample of at most this many training "
        "rows; null uses the whole training split.",
    )
    int8_min_agreement: float = Field(
        0.98,
        ge=0,
        le=1,
        description="int8 quantizes every MatMul first; when the quantized model's predictions "
        "agree with the fp32 model's on fewer than this share of the validation split, the "
        "feed-forward MatMuls (the most outlier-sensitive) stay fp32 instead.",
    )
    fuse_attention: bool = Field(
        True,
        description="int8 variants quantize a graph whose attention, LayerNorm and GELU are "
        "fused into ONNX Runtime's operators (one Attention operator per layer), used only "
        "when the fused graph agrees with torch like the plain export must; false quantizes "
        "the plain export.",
    )
    distill_layers: int = Field(
        4,
        description="Encoder layers of a 'distill' student, taken evenly spaced from the "
        "parent (12 -> 4 keeps layers 3, 6, 9, 12): at least 1 and fewer than the parent has.",
    )
    distill_epochs: float = Field(
        3.0, gt=0, le=100, description="Epochs of student training over its texts."
    )
    distill_learning_rate: float = Field(
        1e-4, gt=0, lt=1, description="AdamW learning rate of the student."
    )
    distill_temperature: float = Field(
        2.0,
        gt=0,
        le=20,
        description="Softening temperature of the teacher's and student's distributions.",
    )
    distill_soft_weight: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Weight of the soft-label (KL) loss; the rest goes to cross-entropy on the "
        "training split's true labels.",
    )
    distill_unlabeled: str | None = Field(
        None,
        description="A data source (file, or demo:...) of extra texts the parent labels for "
        "the student; its text column is data.columns.text. Texts near-duplicating the "
        "validation or test split are left out. null: the training split only.",
    )
    distill_unlabeled_rows: int = Field(
        10_000,
        ge=1,
        description="At most this many extra texts (a seeded sample) from distill_unlabeled.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads while timing variants (ONNX Runtime intra-op threads and "
        "torch threads); null uses every core.",
    )
    latency_texts: int = Field(
        256,
        ge=8,
        le=100_000,
        description="Test texts timed one by one (batch 1) and in batches of 32 for the latency "
        "and throughput figures.",
    )

    @model_validator(mode="after")
    def _variants_once(self) -> CompressConfig:
        repeated = sorted({v for v in self.variants if self.variants.count(v) > 1})
        if repeated:
            raise ValueError(f"compress.variants lists {', '.join(repeated)} more than once")
        return self


class DriftConfig(_Strict):
    """Drift monitoring: a recent window of the prediction log against the champion's
    training data (``flywheel drift``, ``/metrics``)."""

    window: int = Field(
        500, ge=10, le=100_000, description="Most recent predictions of the champion compared."
    )
    min_rows: int = Field(
        50,
        ge=5,
        description="Fewer predictions than this in the window: checks are computed but "
        "none raises the alarm (too little traffic to tell).",
    )
    reference_rows: int = Field(
        2000,
        ge=20,
        description="At most this many training texts (a seeded sample) form the reference.",
    )
    bins: int = Field(
        10, ge=2, le=50, description="Quantile bins of the reference for numeric PSI."
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="Population stability index above which a check alarms (0.1: some "
        "shift, 0.25: a significant one).",
    )
    ks_threshold: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Kolmogorov-Smirnov statistic D above which a check alarms (also needs "
        "p < ks_pvalue).",
    )
    ks_pvalue: float = Field(
        0.01, gt=0, lt=1, description="KS p-value below which a large D counts as a shift."
    )
    embedding_auc: float = Field(
        0.75,
        gt=0.5,
        le=1,
        description="Cross-validated ROC AUC of a classifier telling window texts from "
        "reference texts in embedding space (0.5: indistinguishable) above which the "
        "embedding check alarms.",
    )
    refresh_minutes: float = Field(
        60.0,
        gt=0,
        description="How old the last stored report may be before a `/metrics` scrape "
        "computes a new one in the background (the gauges show the last stored one).",
    )


class MonitorConfig(_Strict):
    """Monitoring of a served feature."""

    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="Drift checks and their thresholds."
    )


class Recipe(_Strict):
    """An AI feature: its name, task, data and how the data is prepared."""

    feature: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Feature name: lowercase letters, digits and dashes, e.g. review-sentiment.",
    )
    task: str = Field(
        DEFAULT_TASK,
        description=f"Task kind, one of: {', '.join(TASKS)}. Each task says which sections "
        "it needs (text_classification: data; assistant: assistant; image_classification: "
        "image; text_generation: generation; text_to_text: text_to_text).",
        json_schema_extra={"enum": list(TASKS)},
    )
    description: str = Field("", description="What the feature is for, in a sentence.")
    seed: int = Field(42, description="Seed for sampling, splitting and training.")
    data: DataConfig | None = Field(
        None, description="Data source and column mapping (tasks that learn from rows)."
    )
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Cleaning options.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="PII options.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Split options.")
    report: ReportConfig = Field(
        default_factory=ReportConfig, description="Data-quality warning thresholds."
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model to train.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training options.")
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig, description="How the model is compared with the baseline."
    )
    gate: GateConfig = Field(
        default_factory=GateConfig,
        description="Promotion gate for retrained candidates (feedback loop).",
    )
    compress: CompressConfig = Field(
        default_factory=CompressConfig,
        description="Compressed variants (ONNX, int8, fp16, pruned) and their gate.",
    )

    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig,
        description="Monitoring of live traffic (drift thresholds).",
    )

    assistant: AssistantConfig | None = Field(
        None,
        description="The customer-service assistant (task assistant); its fields live in "
        "aiflywheel.tasks.assistant.config.",
    )

    image: ImageConfig | None = Field(
        None,
        description="The image classifier (task image_classification): its source, input "
        "size, model and limits; fields live in aiflywheel.tasks.image_classification.config.",
    )

    generation: GenerationConfig | None = Field(
        None,
        description="The text generator (task text_generation): data, base model, tuning, "
        "evaluation; fields live in aiflywheel.tasks.text_generation.config.",
    )

    text_to_text: TextToTextConfig | None = Field(
        None,
        description="Source -> target pairs and the LSTM encoder-decoder (task text_to_text); "
        "fields live in aiflywheel.tasks.text_to_text.config.",
    )

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("task")
    @classmethod
    def _task_is_registered(cls, value: str) -> str:
        try:
            return check_task_name(value)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _sections_fit_the_task(self) -> Recipe:
        try:
            get_task(self.task).check_recipe(self)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        for other in TASKS:
            if other == self.task:
                continue
            for section in get_task(other).owns_sections:  # "image" or "train.augment"
                value: Any = self
                for part in section.split("."):
                    value = getattr(value, part)
                if value is not None:
                    raise ValueError(
                        f"the {section} section only applies to task {other}, not {self.task}"
                    )
        return self

    @model_validator(mode="after")
    def _group_by_is_meta(self) -> Recipe:
        group = self.split.group_by
        if group is not None and self.data is not None and group not in self.data.columns.meta:
            raise ValueError(
                f"split.group_by {group!r} must be one of data.columns.meta "
                f"{self.data.columns.meta}"
            )
        return self

    @model_validator(mode="after")
    def _slices_are_meta(self) -> Recipe:
        for column in self.evaluate.slices or []:
            if self.data is not None and column not in self.data.columns.meta:
                raise ValueError(
                    f"evaluate.slices column {column!r} must be one of data.columns.meta "
                    f"{self.data.columns.meta}"
                )
        return self

    @property
    def base_dir(self) -> Path:
        """Directory that relative data paths are resolved against (the recipe's folder)."""
        return self._base_dir

    def with_base_dir(self, base_dir: Path) -> Recipe:
        self._base_dir = Path(base_dir)
        return self


def with_model_overrides(recipe: Recipe, *, name: str | None, method: str | None) -> Recipe:
    """The recipe with ``model.name`` / ``model.method`` replaced (validated like the file)."""
    if name is None and method is None:
        return recipe
    obj = recipe.model_dump(mode="json")
    if name is not None:
        obj["model"]["name"] = name
    if method is not None:
        obj["model"]["method"] = method
    return parse_recipe(obj, origin="command line", base_dir=recipe.base_dir)


def parse_recipe(obj: Any, *, origin: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a parsed YAML/JSON object as a Recipe, raising RecipeError in one line."""
    if not isinstance(obj, dict):
        raise RecipeError(f"{origin}: expected a mapping of recipe keys, got {type(obj).__name__}")
    try:
        recipe = Recipe.model_validate(obj)
    except ValidationError as exc:
        raise RecipeError(f"{origin}: {describe_validation_error(exc, Recipe)}") from None
    return recipe.with_base_dir(base_dir or Path.cwd())


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe YAML file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: recipe must be UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
    return parse_recipe(obj, origin=str(path), base_dir=path.resolve().parent)


def recipe_json_schema() -> dict:
    """JSON Schema of the recipe (what ``flywheel recipe schema`` prints)."""
    return Recipe.model_json_schema()


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """Turn the first pydantic error into one line that names the key and the bad value."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        parent = _model_at(model, first["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see `flywheel recipe schema`"
        return f"unknown key {loc!r} (allowed here: {allowed}){more}"
    if first["type"] == "missing":
        return f"missing required key {loc!r}{more}"
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    where = f"{loc}: " if loc else ""
    shown = first.get("input")
    got = "" if isinstance(shown, dict) else f", got {shown!r}"
    return f"{where}{message}{got}{more}"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = _unwrap_optional(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_optional(annotation: Any) -> Any:
    """``X`` for ``X | None`` (a section that some tasks leave out), else the annotation."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and typing.get_args(annotation) else annotation

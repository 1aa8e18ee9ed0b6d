"""The typed result record of one run: what ``run_one`` returns, ``result.json`` holds, the store
summarises and the report reads.

One schema for every producer (the real :func:`hiddencost.run.run_one`, custom study runners,
test fixtures) and every consumer, checked where a record crosses a module boundary
(:meth:`RunRecord.model_validate` on what a runner returns and on every ``result.json`` read
back). Fields are those of ``result.json``, in that order; ``schema_version`` says which layout
a file was written with. Fields are read as attributes (``record.accuracy``); the JSON form is
:meth:`RunRecord.to_json`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from hiddencost.compression.report import CompressionReport

#: Bumped whenever a field is added, removed or changes meaning (2: ``paper_kl_uniform_incorrect``,
#: ``paper_remaining_percent``; 3: ``method``, ``network_family`` and the CPU's ISA in
#: ``versions``; files of older versions read with those fields unset).
SCHEMA_VERSION = 3

#: The scalar metrics of a run, in display order: what tables and summaries show.
METRIC_FIELDS: tuple[str, ...] = (
    "accuracy", "ece", "mce", "nll", "brier", "paper_ece", "mean_confidence_correct",
    "kl_to_uniform_incorrect", "paper_kl_uniform_incorrect",
)
#: What the loaded backbone measurably holds (measured after compression, not the target).
COMPRESSION_FIELDS: tuple[str, ...] = (
    "sparsity", "paper_remaining_percent", "weight_bits", "activation_bits")
#: The integers a record (and a run's configuration) may hold: signed 64 bits, what the
#: store (SQLite) and an export (Parquet) keep. A larger one is refused where it is read, so it
#: never reaches an export as an overflow.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: A count (examples, parameters) that fits a store column.
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: A measured bit-width.
Bits = Annotated[int, Field(ge=1, le=64)]


def check_int64(data: Any, where: str = "") -> None:
    """Raise a pydantic error naming the dotted path of the first integer in ``data`` (dicts,
    lists and tuples walked) outside signed 64 bits; for ``mode="before"`` validators of what
    the schema does not type (a configuration's ``options``, a record's ``config``)."""
    if isinstance(data, dict):
        for key, value in data.items():
            check_int64(value, f"{where}.{key}" if where else str(key))
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            check_int64(value, f"{where}.{i}" if where else str(i))
    elif isinstance(data, int) and not INT64_MIN <= data <= INT64_MAX:
        raise PydanticCustomError(
            "int64", "{where}: {value} does not fit in 64 bits (at most {limit})",
            {"where": where or "value", "value": data, "limit": INT64_MAX})


class MappingEntry(BaseModel):
    """One target class and the source (backbone) class a label mapping assigns to it; with
    ``m > 1`` sources per target (``mapping_num``), ``source`` is the first (lowest index) and
    ``sources`` / ``source_names`` list all ``m``, whose logits are averaged."""

    model_config = ConfigDict(extra="forbid")

    target: int
    target_name: str
    source: int
    source_name: str
    sources: list[int] | None = None
    source_names: list[str] | None = None


class EpochRecord(BaseModel):
    """One epoch of any training loop (VP, LP, CLIP VP, cross-modal): its 1-based ``epoch``,
    the mean training ``loss`` and ``train_accuracy`` over the epoch's examples, the learning
    rate ``lr`` it trained at and its ``seconds`` (training only). Label-mapping methods add
    how many targets changed source (``mapping_changes``; all K at epoch 1) and whether the
    mapping was recomputed (``mapping_recomputed``); ``test_accuracy`` is there with
    ``test_every_epoch`` (curves only), ``steps`` (optimiser steps so far) with a step budget.
    Fields a loop does not set are left out of the JSON."""

    model_config = ConfigDict(extra="forbid")

    epoch: int
    loss: float
    train_accuracy: float
    lr: float
    mapping_changes: int | None = None
    mapping_recomputed: bool | None = None
    seconds: float
    test_accuracy: float | None = None
    steps: int | None = None

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class MethodCard(BaseModel):
    """How a run's transfer method is named and shown outside its own module: the report and
    the plan read this instead of branching on method names. ``id`` is family-qualified
    (``timm/ilm`` is ILM-VP, ``open_clip/ilm`` ILM-TP-VP)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    id: str
    display_name: str
    marker: str = "o"
    learns_prompt: bool = False
    #: The tasks it reads: ``image`` or ``sequence`` (text, DNA: cross-modal reprogramming).
    modality: str = "image"


class Reliability(BaseModel):
    """Reliability-diagram data: bin edges (``n_bins + 1``), and per bin the sample count, the
    accuracy and the mean confidence (None for an empty bin)."""

    model_config = ConfigDict(extra="forbid")

    edges: list[float]
    counts: list[int]
    accuracy: list[float | None]
    confidence: list[float | None]


class Recalibration(BaseModel):
    """The test calibration after temperature scaling (Guo et al. 2017): T fitted by NLL on a
    validation split held out from the training pool (``n_validation`` examples, see
    :func:`hiddencost.data.few_shot.validation_split`), then the test split's ECE, NLL and
    Brier of softmax(z / T), as the record's own metrics (accuracy does not change with T)."""

    model_config = ConfigDict(extra="forbid")

    n_validation: int
    temperature: float
    ece: float
    nll: float
    brier: float


class TrainedBackbone(BaseModel):
    """What a method that trains backbone parameters (fine-tuning, BitFit, LoRA) trained, and
    whether the compression survived it, measured on the trained backbone after the run.

    ``trainable_parameters`` counts the tensors the optimiser updated (the new head included);
    ``backbone_parameters`` the backbone's own (adapters excluded). ``sparsity_before`` /
    ``sparsity_after`` are the measured sparsity of the compression's prunable layers (its
    exclusions applied); ``zero_set_kept``: every weight that was exactly zero before still is;
    ``max_distinct_values_per_channel`` after training, with ``bits_kept``: at most
    2^bits − 1 values per output channel of every quantized layer (None: not quantized).
    ``merged``: LoRA adapters were merged into the weights (``--set merge=true``).
    ``peak_memory_mb``: the device's peak allocated memory during training (CUDA only; None on
    a CPU, where a per-run peak is not measurable)."""

    model_config = ConfigDict(extra="forbid")

    trainable_parameters: int
    backbone_parameters: int
    sparsity_before: float
    sparsity_after: float
    zero_set_kept: bool
    max_distinct_values_per_channel: int | None = None
    bits_kept: bool | None = None
    merged: bool = False
    peak_memory_mb: float | None = None


class RunRecord(BaseModel):
    """The result of one run (see :func:`hiddencost.run.run_one` for how each field is made).

    Metrics follow :func:`hiddencost.metrics.calibration_summary` (softmax over the K mapped
    logits, final epoch, whole test split); ``paper_ece`` is the reference code's compatibility
    value; ``sparsity`` / ``weight_bits`` / ``activation_bits`` are *measured* on the loaded,
    compressed backbone; ``label_mapping`` is None for methods without a one-to-one mapping
    (LP, FM).
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Count = SCHEMA_VERSION
    config: dict[str, Any]
    #: The transfer method as shown (None in records of schema < 3).
    method: MethodCard | None = None
    #: The backbone's network family (``timm``, ``open_clip``; None in records of schema < 3).
    network_family: str | None = None
    label_mapping: list[MappingEntry] | None = None
    mapping_history: list[list[int]] | list[list[list[int]]] | None = None
    accuracy: float
    ece: float
    mce: float | None = None
    nll: float
    brier: float | None = None
    mean_confidence_correct: float | None = None
    kl_to_uniform_incorrect: float | None = None
    #: The paper's value, KL(u ‖ p)/K (see :func:`hiddencost.metrics.paper_kl_uniform_incorrect`).
    paper_kl_uniform_incorrect: float | None = None
    per_class_accuracy: list[float | None] = Field(default_factory=list)
    reliability: Reliability | None = None
    paper_ece: float | None = None
    compression: CompressionReport
    sparsity: float = 0.0
    #: The paper's convention: % of conv weights remaining, ``conv1`` excluded
    #: (:func:`hiddencost.compression.measure.paper_remaining_percent`).
    paper_remaining_percent: float | None = None
    weight_bits: Bits | None = None
    activation_bits: Bits | None = None
    backbone_weights: str = ""
    #: What the weight source verified about the loaded backbone, when it reports anything
    #: (UPop: parameters, dense parameters, ratio; zoo formats: the claim they checked).
    backbone: dict[str, Any] | None = None
    n_train: Count | None = None
    n_test: Count | None = None
    effective_shots: dict[str, Count] = Field(default_factory=dict)
    history: list[EpochRecord] = Field(default_factory=list)
    final_train_loss: float | None = None
    wall_time_s: float
    device: str = ""
    #: The run's precision on its device, ``fp32`` or ``bf16`` (what ``auto`` resolved to; an
    #: activation-quantized backbone trains in fp32 under either, see
    #: :mod:`hiddencost.precision`); None in records written before it was recorded.
    precision: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    #: Things the run did that its configuration does not say (e.g. an N-shot above every
    #: class, so the run used all training data).
    warnings: list[str] = Field(default_factory=list)
    #: With a ``validation_fraction``: the calibration after temperature scaling.
    recalibration: Recalibration | None = None
    #: Methods that train the backbone: what they trained and what of the compression survived.
    trained_backbone: TrainedBackbone | None = None
    #: A prompt with more than δ (SMM's mask generator): δ's and its parameters.
    prompt_parameters: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _older_schemas(cls, data: Any) -> Any:
        # schema ≤ 2 records carried a ``synthetic`` flag (a test seam, always false for a
        # real run); it is dropped on reading
        if isinstance(data, dict) and "synthetic" in data and data.get("schema_version", 1) < 3:
            data = {k: v for k, v in data.items() if k != "synthetic"}
        return data

    @model_validator(mode="before")
    @classmethod
    def _untyped_ints_fit(cls, data: Any) -> Any:
        # the free-form fields hold what a runner put there: bounded like the typed ones
        if isinstance(data, dict):
            check_int64({k: data[k] for k in ("config", "backbone") if k in data})
        return data

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe dict written to ``result.json`` (``backbone``, ``recalibration``,
        ``trained_backbone`` and ``prompt_parameters`` only when there are, so the records of
        runs without them keep their earlier form)."""
        absent = {k for k in ("backbone", "recalibration", "trained_backbone",
                              "prompt_parameters") if getattr(self, k) is None}
        return self.model_dump(mode="json", exclude=absent or None)

    def scalar_metrics(self) -> dict[str, Any]:
        """The scalar top-level fields (accuracy, ece, nll, sparsity, ...): what the store keeps
        beside the run's row."""
        return {k: v for k, v in self.to_json().items()
                if v is None or isinstance(v, bool | int | float | str)}


def as_record(data: RunRecord | dict[str, Any]) -> RunRecord:
    """A :class:`RunRecord` from a record or its JSON dict (validated)."""
    return data if isinstance(data, RunRecord) else RunRecord.model_validate(data)

"""What compression to apply (:data:`CompressionSpec`), applying it, and what it measurably did.

One spec is one point on the compression axis of a study, a pydantic **discriminated union** on
``method``:

=============  ===============  ===========================================================
``method``     class            fields
=============  ===============  ===========================================================
``none``       :class:`Dense`   (the dense model)
``magnitude``  :class:`MagnitudePruning`  ``sparsity`` in (0, 1), ``scope`` (``global`` or
                                ``layer``), exclusions
``random``     :class:`RandomPruning`     as magnitude, plus ``seed``
``quantize``   :class:`Quantization`      ``weight_bits`` and/or ``activation_bits`` in
                                {2, 3, 4, 8}, exclusions
=============  ===============  ===========================================================

``exclude_first_conv`` / ``exclude_classifier`` keep the first conv / last linear layer
uncompressed (see :mod:`hiddencost.compression.pruning` for the layer set). Pruning and
quantization are not combined in one spec. Every variant answers the same questions
(``label``, ``level`` and ``unit`` for a study's tags, ``sparsity`` / ``weight_bits`` /
``activation_bits``, ``apply``), so no caller branches on ``method``. Specs are parsed from YAML,
CLI flags and the short ``magnitude:0.9`` form in one place, :mod:`hiddencost.compression.parse`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from hiddencost.compression.levels import LevelUnit
from hiddencost.compression.measure import (
    max_distinct_values_per_channel,
    paper_remaining_percent,
    sparsity_counts,
)
from hiddencost.compression.parse import short_form_fields
from hiddencost.compression.pruning import magnitude_prune, random_prune
from hiddencost.compression.quantization import (
    SUPPORTED_BITS,
    activation_quantizers,
    calibrate_activations,
    quantize_activations,
    quantize_weights,
)
from hiddencost.errors import HiddenCostError, validation_message

__all__ = [
    "COMPRESSION_ADAPTER",
    "CompressionReport",
    "CompressionSpec",
    "Dense",
    "FIELD_NAMES",
    "MagnitudePruning",
    "Quantization",
    "RandomPruning",
    "apply_compression",
    "compression_or_error",
    "measure_compression",
    "parse_compression",
]


def _format_sparsity(s: float) -> str:
    two = f"{s:.2f}"
    return two if float(two) == s else format(s, ".10g")


class _Spec(BaseModel):
    """What every compression variant answers; fields live on the variants."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @property
    def family(self) -> str:
        """The study's family tag: ``dense`` or the method."""
        return self.method  # type: ignore[attr-defined]

    @property
    def exclusions(self) -> dict[str, bool]:
        """``exclude_first_conv`` / ``exclude_classifier`` as keyword arguments."""
        return {"exclude_first_conv": getattr(self, "exclude_first_conv", False),
                "exclude_classifier": getattr(self, "exclude_classifier", False)}

    @property
    def level(self) -> float | int | None:
        """The point's level on its family's axis (None for dense)."""
        return None

    @property
    def unit(self) -> LevelUnit | None:
        """The unit of :attr:`level`."""
        return None

    def _suffix(self) -> str:
        excl = self.exclusions
        return ("-xfirst" if excl["exclude_first_conv"] else "") + (
            "-xcls" if excl["exclude_classifier"] else "")

    def apply(self, model: nn.Module, calibration_images: torch.Tensor | None,
              calibration_batch_size: int) -> None:
        """Compress ``model`` in place (the dense spec does nothing)."""


class _NotPruned:
    @property
    def sparsity(self) -> float:
        """The target fraction of zeroed weights: 0, this method does not prune."""
        return 0.0


class _NotQuantized:
    @property
    def weight_bits(self) -> None:
        """Weight bit-width: None, this method does not quantize."""
        return None

    @property
    def activation_bits(self) -> None:
        """Activation bit-width: None, this method does not quantize."""
        return None


class Dense(_Spec, _NotPruned, _NotQuantized):
    """The dense (uncompressed) model."""

    method: Literal["none"] = "none"

    @property
    def family(self) -> str:
        return "dense"

    @property
    def label(self) -> str:
        """``"dense"``."""
        return "dense"


class _Pruning(_Spec, _NotQuantized):
    method: Literal["magnitude", "random"]
    sparsity: float
    scope: Literal["global", "layer"] = "global"
    exclude_first_conv: bool = False
    exclude_classifier: bool = False

    @field_validator("sparsity")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"sparsity must be in (0, 1) for pruning, got {v}")
        return v

    @property
    def level(self) -> float:
        return self.sparsity

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.SPARSITY


class MagnitudePruning(_Pruning):
    """Unstructured magnitude pruning to ``sparsity`` over ``scope``."""

    method: Literal["magnitude"] = "magnitude"

    @property
    def label(self) -> str:
        """``"magnitude-global-s0.90"``, ``"magnitude-layer-s0.50"``; sparsity with two
        decimals unless more are needed (``"s0.123"``); exclusions append ``"-xfirst"`` /
        ``"-xcls"``."""
        return f"magnitude-{self.scope}-s{_format_sparsity(self.sparsity)}{self._suffix()}"

    def apply(self, model: nn.Module, calibration_images: torch.Tensor | None,
              calibration_batch_size: int) -> None:
        magnitude_prune(model, self.sparsity, scope=self.scope, **self.exclusions)


class RandomPruning(_Pruning):
    """Unstructured random pruning to ``sparsity`` over ``scope``, drawn with ``seed``."""

    method: Literal["random"] = "random"
    seed: int = 0

    @property
    def label(self) -> str:
        """``"random-s0.50"`` (global scope) or ``"random-layer-s0.50"``; the seed is not part
        of the label."""
        scope = "" if self.scope == "global" else f"{self.scope}-"
        return f"random-{scope}s{_format_sparsity(self.sparsity)}{self._suffix()}"

    def apply(self, model: nn.Module, calibration_images: torch.Tensor | None,
              calibration_batch_size: int) -> None:
        random_prune(model, self.sparsity, self.seed, scope=self.scope, **self.exclusions)


class Quantization(_Spec, _NotPruned):
    """k-bit fake quantization of weights (per output channel) and/or activations."""

    method: Literal["quantize"] = "quantize"
    weight_bits: int | None = None
    activation_bits: int | None = None
    exclude_first_conv: bool = False
    exclude_classifier: bool = False

    @field_validator("weight_bits", "activation_bits")
    @classmethod
    def _supported_bits(cls, v: int | None) -> int | None:
        if v is not None and v not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {list(SUPPORTED_BITS)}, got {v}")
        return v

    @model_validator(mode="after")
    def _some_bits(self) -> Quantization:
        if self.weight_bits is None and self.activation_bits is None:
            raise ValueError("method 'quantize' needs weight_bits and/or activation_bits")
        return self

    @property
    def label(self) -> str:
        """``"w4"``, ``"a8"``, ``"w4a4"``, plus exclusion suffixes."""
        w = "" if self.weight_bits is None else f"w{self.weight_bits}"
        a = "" if self.activation_bits is None else f"a{self.activation_bits}"
        return w + a + self._suffix()

    @property
    def level(self) -> int:
        return self.weight_bits or self.activation_bits  # type: ignore[return-value]

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.BITS

    def apply(self, model: nn.Module, calibration_images: torch.Tensor | None,
              calibration_batch_size: int) -> None:
        """Weights first, then activation quantizers calibrated on ``calibration_images``, so
        activation ranges are those of the quantized-weight model."""
        if self.weight_bits is not None:
            quantize_weights(model, self.weight_bits, **self.exclusions)
        if self.activation_bits is not None:
            quantize_activations(model, self.activation_bits, **self.exclusions)
            calibrate_activations(model, calibration_images,  # type: ignore[arg-type]
                                  batch_size=calibration_batch_size)


#: The value of each field that means "this part of compression is off". A field another variant
#: owns, given at this value, is dropped: ``{method: none, sparsity: 0}`` is dense, and records
#: written when every spec carried every field still read.
NEUTRAL: dict[str, Any] = {"sparsity": 0.0, "scope": "global", "weight_bits": None,
                           "activation_bits": None, "exclude_first_conv": False,
                           "exclude_classifier": False, "seed": 0}


def _coerce(value: Any) -> Any:
    """The text forms (``"magnitude:0.9"``) become fields; a mapping without ``method`` is dense;
    fields the variant lacks are dropped when they hold their :data:`NEUTRAL` value."""
    if isinstance(value, str):
        value = short_form_fields(value)
    if not isinstance(value, dict):
        return value
    value = {"method": "none", **value}
    variant = _BY_METHOD.get(value["method"])
    if variant is None:
        return value  # the union reports the unknown method
    return {k: v for k, v in value.items()
            if k in variant.model_fields or k not in NEUTRAL or v != NEUTRAL[k]}


#: One compression setting: the variants, told apart by ``method`` (default ``none``); a field of
#: this type also accepts the short form (:mod:`hiddencost.compression.parse`).
CompressionSpec = Annotated[
    Dense | MagnitudePruning | RandomPruning | Quantization,
    Field(discriminator="method"), BeforeValidator(_coerce),
]
COMPRESSION_ADAPTER: TypeAdapter[Any] = TypeAdapter(CompressionSpec)
_VARIANTS = (Dense, MagnitudePruning, RandomPruning, Quantization)
_BY_METHOD: dict[str, type[_Spec]] = {
    v.model_fields["method"].default: v for v in _VARIANTS}
#: Every field some variant has, in a stable order (what a compression mapping may hold).
FIELD_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f for v in _VARIANTS for f in v.model_fields))


def parse_compression(value: Any) -> CompressionSpec:
    """The one parser of compression settings: a spec, a mapping of fields (YAML, flags) or the
    short form, validated into its variant. Invalid input raises :class:`pydantic.ValidationError`
    (use :func:`compression_or_error` for a one-line :class:`HiddenCostError`)."""
    return COMPRESSION_ADAPTER.validate_python(value)


def compression_or_error(value: Any) -> CompressionSpec:
    """:func:`parse_compression` with a one-line :class:`HiddenCostError` for bad input."""
    try:
        return parse_compression(value)
    except ValidationError as exc:
        raise HiddenCostError(f"invalid compression {value!r}: "
                              f"{validation_message(exc, skip=1)}") from None


@dataclass(frozen=True)
class CompressionReport:
    """What a compressed model measurably holds.

    ``measured_sparsity = n_zero_weights / n_prunable_weights`` over the prunable layers *in the
    spec's scope* (exclusions applied); ``overall_sparsity`` over all prunable layers.
    ``max_distinct_values_per_channel`` is the largest number of distinct values in one output
    channel of an in-scope weight when weights were quantized (at most ``2^weight_bits``), else
    None. ``n_activation_quantizers`` counts calibrated activation quantizers.
    ``paper_remaining_percent`` is the paper's convention (% of conv weights remaining, ``conv1``
    excluded; :func:`~hiddencost.compression.measure.paper_remaining_percent`).
    """

    method: str
    label: str
    target_sparsity: float
    measured_sparsity: float
    weight_bits: int | None
    activation_bits: int | None
    n_prunable_weights: int
    n_zero_weights: int
    max_distinct_values_per_channel: int | None
    overall_sparsity: float = 0.0
    n_activation_quantizers: int = 0
    paper_remaining_percent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)


def measure_compression(model: nn.Module, spec: CompressionSpec) -> CompressionReport:
    """Measure ``model`` against ``spec`` without changing it."""
    excl = spec.exclusions
    n_zero, n_total = sparsity_counts(model, **excl)
    all_zero, all_total = sparsity_counts(model)
    distinct = max_distinct_values_per_channel(model, **excl) if spec.weight_bits else None
    return CompressionReport(
        method=spec.method,
        label=spec.label,
        target_sparsity=spec.sparsity,
        measured_sparsity=n_zero / n_total if n_total else 0.0,
        weight_bits=spec.weight_bits,
        activation_bits=spec.activation_bits,
        n_prunable_weights=n_total,
        n_zero_weights=n_zero,
        max_distinct_values_per_channel=distinct,
        overall_sparsity=all_zero / all_total if all_total else 0.0,
        n_activation_quantizers=sum(q.calibrated for q in activation_quantizers(model)),
        paper_remaining_percent=paper_remaining_percent(model),
    )


def apply_compression(
    model: nn.Module,
    spec: CompressionSpec,
    calibration_images: torch.Tensor | None = None,
    calibration_batch_size: int = 64,
) -> CompressionReport:
    """Compress a (pretrained, frozen) ``model`` in place as ``spec`` says; return what it holds.

    Pruning uses :func:`magnitude_prune` / :func:`random_prune`; quantization applies
    :func:`quantize_weights` first, then :func:`quantize_activations` and
    :func:`calibrate_activations` on ``calibration_images`` (normalised model inputs, required
    when ``activation_bits`` is set). Inputs are checked before the model is touched; if a later
    step fails the model is left partly compressed, so compress a copy when the original matters.
    """
    if not isinstance(spec, _VARIANTS):
        raise HiddenCostError(f"expected a CompressionSpec, got {type(spec).__name__}")
    if spec.activation_bits is not None:
        if calibration_images is None:
            raise HiddenCostError(
                f"activation quantization ({spec.label}) needs calibration_images: "
                "a tensor of normalised model inputs"
            )
        if not isinstance(calibration_images, torch.Tensor) or calibration_images.numel() == 0:
            raise HiddenCostError("calibration_images must be a non-empty tensor")
    spec.apply(model, calibration_images, calibration_batch_size)
    return measure_compression(model, spec)

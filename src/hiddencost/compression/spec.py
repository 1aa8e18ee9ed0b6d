"""What compression to apply (:data:`CompressionSpec`): parsed and validated without torch.

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
``nm``         :class:`NMSparsity`        ``n`` of every ``m`` consecutive weights kept,
                                ``score`` (``magnitude`` or ``wanda``), ``exclude_classifier``
``wanda``      :class:`Wanda`             ``sparsity`` per output row by |W|·‖X‖, exclusions
``gptq``       :class:`GPTQ`              ``weight_bits`` by second-order rounding, ``damp``,
                                exclusions
``lowrank``    :class:`LowRank`           ``rank_ratio`` of Linear / 1×1 convolutions, exclusions
=============  ===============  ===========================================================

Wanda, Wanda-scored N:M and GPTQ calibrate on images (``needs_calibration``): the run's own
training images through its input transform, as activation quantizers do.

``exclude_first_conv`` / ``exclude_classifier`` keep the first conv / last linear layer
uncompressed (see :mod:`hiddencost.compression.pruning` for the layer set). Pruning and
quantization are not combined in one spec. Every variant answers the same questions
(``label``, ``level`` and ``unit`` for a study's tags, ``sparsity`` / ``weight_bits`` /
``activation_bits``, ``apply``), so no caller branches on ``method``. Specs are parsed from YAML,
CLI flags and the short ``magnitude:0.9`` form in one place, :mod:`hiddencost.compression.parse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from hiddencost.compression.levels import LevelUnit
from hiddencost.compression.parse import short_form_fields
from hiddencost.errors import HiddenCostError, validation_message

__all__ = [
    "COMPRESSION_ADAPTER",
    "CompressionSpec",
    "Dense",
    "FIELD_NAMES",
    "GPTQ",
    "LowRank",
    "MagnitudePruning",
    "NMSparsity",
    "Quantization",
    "RandomPruning",
    "SUPPORTED_BITS",
    "Wanda",
    "compression_or_error",
    "parse_compression",
]

#: Bit-widths the fake quantizers support.
SUPPORTED_BITS: tuple[int, ...] = (2, 3, 4, 8)


def _bits(v: int) -> int:
    if v not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {list(SUPPORTED_BITS)}, got {v}")
    return v


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
    def needs_calibration(self) -> bool:
        """Whether applying it reads calibration images (normalised model inputs)."""
        return self.activation_bits is not None  # type: ignore[attr-defined]

    @property
    def restructures(self) -> bool:
        """Whether applying it replaces modules (a saved model is rebuilt by applying it to
        the fresh architecture before its weights load)."""
        return False

    @property
    def unit(self) -> LevelUnit | None:
        """The unit of :attr:`level`."""
        return None

    def _suffix(self) -> str:
        excl = self.exclusions
        return ("-xfirst" if excl["exclude_first_conv"] else "") + (
            "-xcls" if excl["exclude_classifier"] else "")


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
        return v if v is None else _bits(v)

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


def _fraction(v: float) -> float:
    if not 0.0 < v < 1.0:
        raise ValueError(f"must be in (0, 1), got {v}")
    return v


#: A fraction in (0, 1) (Wanda's sparsity, low rank's rank ratio).
Fraction = Annotated[float, AfterValidator(_fraction)]
#: A bit-width the fake quantizers support.
Bits = Annotated[int, AfterValidator(_bits)]


class NMSparsity(_Spec, _NotQuantized):
    """N:M semi-structured sparsity (:mod:`hiddencost.compression.activation_aware`): ``n`` of
    every ``m`` consecutive weights of an output row kept, by magnitude or Wanda's score; the
    stem, grouped convolutions and rows not a multiple of ``m`` stay dense (listed)."""

    method: Literal["nm"] = "nm"
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2, le=64)
    score: Literal["magnitude", "wanda"] = "magnitude"
    exclude_classifier: bool = False

    @model_validator(mode="after")
    def _n_below_m(self) -> NMSparsity:
        if self.n >= self.m:
            raise ValueError(f"N:M needs n < m, got {self.n}:{self.m}")
        return self

    @property
    def family(self) -> str:
        """``nm`` by magnitude, ``wanda-nm`` by Wanda's score."""
        return "wanda-nm" if self.score == "wanda" else "nm"

    @property
    def sparsity(self) -> float:
        """1 − n/m: the sparsity of the layers that take the pattern."""
        return 1.0 - self.n / self.m

    @property
    def level(self) -> float:
        return self.sparsity

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.SPARSITY

    @property
    def needs_calibration(self) -> bool:
        return self.score == "wanda"

    @property
    def label(self) -> str:
        """``"nm2:4"``, ``"wanda-nm2:4"``."""
        return f"{'wanda-' if self.score == 'wanda' else ''}nm{self.n}:{self.m}{self._suffix()}"


class Wanda(_Spec, _NotQuantized):
    """Wanda (|W|·‖X‖ per output row) to ``sparsity`` in every row of every in-scope layer."""

    method: Literal["wanda"] = "wanda"
    sparsity: Fraction
    exclude_first_conv: bool = False
    exclude_classifier: bool = False

    @property
    def level(self) -> float:
        return self.sparsity

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.SPARSITY

    @property
    def needs_calibration(self) -> bool:
        return True

    @property
    def label(self) -> str:
        """``"wanda-s0.50"``."""
        return f"wanda-s{_format_sparsity(self.sparsity)}{self._suffix()}"


class GPTQ(_Spec, _NotPruned):
    """k-bit weights by second-order rounding (:mod:`hiddencost.compression.gptq`) on
    round-to-nearest's grid."""

    method: Literal["gptq"] = "gptq"
    weight_bits: Bits
    damp: float = Field(0.01, gt=0, le=1)
    exclude_first_conv: bool = False
    exclude_classifier: bool = False

    @property
    def activation_bits(self) -> None:
        return None

    @property
    def level(self) -> int:
        return self.weight_bits

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.BITS

    @property
    def needs_calibration(self) -> bool:
        return True

    @property
    def label(self) -> str:
        """``"gptq-w4"``."""
        return f"gptq-w{self.weight_bits}{self._suffix()}"


class LowRank(_Spec, _NotPruned, _NotQuantized):
    """Linear layers and 1×1 convolutions replaced by rank-r SVD factors
    (:mod:`hiddencost.compression.lowrank`), r = ``rank_ratio`` of the full rank."""

    method: Literal["lowrank"] = "lowrank"
    rank_ratio: Fraction
    exclude_first_conv: bool = False
    exclude_classifier: bool = False

    @property
    def level(self) -> float:
        return self.rank_ratio

    @property
    def unit(self) -> LevelUnit:
        return LevelUnit.RANK_RATIO

    @property
    def restructures(self) -> bool:
        return True

    @property
    def label(self) -> str:
        """``"lowrank-r0.25"``."""
        return f"lowrank-r{_format_sparsity(self.rank_ratio)}{self._suffix()}"


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
    Dense | MagnitudePruning | RandomPruning | Quantization | NMSparsity | Wanda | GPTQ | LowRank,
    Field(discriminator="method"), BeforeValidator(_coerce),
]
COMPRESSION_ADAPTER: TypeAdapter[Any] = TypeAdapter(CompressionSpec)
#: The spec classes, one per ``method``.
VARIANTS = (Dense, MagnitudePruning, RandomPruning, Quantization, NMSparsity, Wanda, GPTQ,
            LowRank)
_BY_METHOD: dict[str, type[_Spec]] = {
    v.model_fields["method"].default: v for v in VARIANTS}
#: Every field some variant has, in a stable order (what a compression mapping may hold).
FIELD_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f for v in VARIANTS for f in v.model_fields))


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



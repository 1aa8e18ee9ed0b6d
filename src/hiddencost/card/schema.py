"""The score card's schema (``card.json``), versioned: :data:`CARD_SCHEMA`.

Numbers are percentages (accuracy, ECE, rates) or percentage points (Δ); an interval is the
mean over seeds with its 95% Student-t interval (``lo``/``hi`` None with one seed); Δ is dense
− compressed (positive: compression costs), with the two-sided Welch p across seeds. None
stands for "not measured" (no stored predictions, one seed, no fidelity).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hiddencost.errors import HiddenCostError

#: The schema of ``card.json``; a card of another schema is refused.
CARD_SCHEMA = "hiddencost-card/1"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interval(_Model):
    """A mean over seeds and its 95% t-interval."""

    mean: float | None
    lo: float | None = None
    hi: float | None = None
    n: int = 0


class CellCard(_Model):
    """One cell of the suite (dataset, method, budget): dense against compressed."""

    dataset: str
    method: str
    budget: str
    dense_accuracy: Interval
    compressed_accuracy: Interval
    delta_accuracy: float | None
    p_accuracy: float | None
    dense_ece: Interval
    compressed_ece: Interval
    delta_ece: float | None
    p_ece: float | None
    pie_rate: float | None = None
    #: The share of examples the dense seeds predict differently: the PIE rate's baseline.
    dense_disagreement: float | None = None
    lost_rate: float | None = None
    gained_rate: float | None = None
    hurt_classes: int | None = None
    worst_class_delta: float | None = None


class Fidelity(_Model):
    """Upstream fidelity of the compressed backbone on one dataset's test images."""

    dataset: str
    top1_agreement: float
    mean_kl: float


class CompressedCard(_Model):
    """One compressed point of the card."""

    point: str
    label: str
    family: str
    #: The model's parameters (where its weight source reports them: CLIP/UPop).
    parameters: int | None = None
    #: The weights of the prunable layers, and those of them that are not zero.
    prunable_weights: int | None = None
    nonzero_weights: int | None = None
    sparsity: float | None = None
    weight_bits: int | None = None
    activation_bits: int | None = None
    fidelity: list[Fidelity] = []
    cells: list[CellCard]
    #: The hidden-cost index: Δ accuracy (pp) averaged over budgets on a log-N axis, then over
    #: the suite's datasets and methods (see :func:`hiddencost.card.build.index_of`).
    index: Interval
    #: The same for Δ ECE (pp).
    ece_index: Interval


class Card(_Model):
    """A hidden-cost score card: a dense model and its compressed points on one suite."""

    card_schema: str = CARD_SCHEMA
    suite: str
    suite_version: int
    suite_description: str
    dense: str
    dense_parameters: int | None = None
    entries: list[CompressedCard]
    study: str
    hiddencost_version: str
    created_at: float

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=1, allow_nan=False)
                        + "\n")
        return path


def read_card(path: str | Path) -> Card:
    """A ``card.json``; another schema or a file that is not a card is a one-line error."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise HiddenCostError(f"cannot read card {path}: {exc}") from None
    schema = data.get("card_schema") if isinstance(data, dict) else None
    if schema != CARD_SCHEMA:
        raise HiddenCostError(f"{path} is not a card of schema {CARD_SCHEMA} (it says "
                              f"{schema!r})")
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise HiddenCostError(f"{path}: {where}: {err['msg']}") from None

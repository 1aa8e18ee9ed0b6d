"""Label mappings as registered strategies: what a VP run's output mapping is and when it moves.

==========  ================================================================================
name        strategy
==========  ================================================================================
``rlm``     a seeded random choice of K (K·m) distinct source classes, fixed for the run
``flm``     the greedy frequency mapping, computed once with the initial prompt (epoch 0)
``ilm``     the frequency mapping recomputed at the start of epoch e when e mod k = 0
            (``mapping_interval`` k; k = 1: every epoch, so epoch 0 is FLM)
``fm``      a trainable fully-connected layer K′ → K on the source logits (AutoVP)
``blm``     Bayesian-guided label mapping: a K′ × K weight matrix ω from the counts of top-1
            source predictions per target, recomputed like ILM (Cai et al., NeurIPS'24)
``blm+``    BLM over the top-k source probabilities instead of top-1 counts
==========  ================================================================================

BLM and BLM+ (read from ``tmlr-group/BayesianLM``, ``mapping.py``): with F the K′ × K matrix
of the training set under the current prompt (BLM: F[s, t] = how many examples of target t
have top-1 source s; BLM+: F[s, t] = Σ over examples of t of their softmax probability of s
when s is among their top k, k = max(1, ⌊ratio · K⌋)), and λ the Laplace term::

    P[s, t] = F[s, t] / (Σ_t' F[s, t'] + λ)        (≈ p(t | s), smoothed)
    ω[s, t] = P[s, t] / Σ_s' P[s', t]               (each target's column sums to 1)

and the target logits are the source logits times ω (no trainable parameters). Defaults: λ = 1
and ratio 0.15 (the reference's ``cfg.py``, where BLM+'s entry is named ``blmp`` while
``train_vm.py`` reads ``blmpp``). A target column with no mass stays zero.

The training loop (:mod:`hiddencost.prompting.visual_prompt`) asks its run's strategy three
things: whether the options fit (:meth:`LabelMapping.check`), the mapping to start from
(:meth:`LabelMapping.initial`) and whether to recompute the frequency mapping at the start of
an epoch (:meth:`LabelMapping.recomputes`). A new mapping is one subclass and one
:data:`MAPPINGS` registration (and, to be a transfer method, one
:class:`~hiddencost.prompting.methods.VisualPrompting` registration naming it).
"""

from __future__ import annotations

import torch

from hiddencost.errors import HiddenCostError
from hiddencost.prompting.label_mapping import check_class_counts, random_mapping
from hiddencost.registry import Registry


def check_positive_options(mapping_interval: int, mapping_num: int) -> None:
    """``mapping_interval`` and ``mapping_num`` must be integers ≥ 1 (bools refused)."""
    for name, value in (("mapping_interval", mapping_interval), ("mapping_num", mapping_num)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HiddenCostError(f"{name} must be an integer ≥ 1, got {value!r}")


class LabelMapping:
    """An index mapping that stays where it starts (``arange(K·m) mod K′``) unless a subclass
    says otherwise; see the module docstring for the registered ones."""

    name: str = ""
    #: A trainable K′ → K layer instead of an index mapping (no mapping is recorded).
    fully_connected: bool = False
    #: A K′ × K weight matrix from the source outputs instead of an index mapping (BLM).
    reweights: bool = False

    def check(self, num_source: int, num_target: int, many_to_one: bool,
              mapping_num: int) -> None:
        """Refuse options the mapping cannot honour (K > K′ one-to-one, K·m > K′)."""
        check_class_counts(num_source, num_target, many_to_one, mapping_num)

    def initial(self, num_source: int, num_target: int, seed: int, many_to_one: bool,
                mapping_num: int) -> torch.Tensor | None:
        """The mapping before training; None keeps the model's ``arange`` initialisation."""
        return None

    def recomputes(self, epoch: int, mapping_interval: int) -> bool:
        """Whether the frequency mapping is (re)computed at the start of ``epoch`` (0-based)."""
        return False


class RandomMapping(LabelMapping):
    name = "rlm"

    def initial(self, num_source: int, num_target: int, seed: int, many_to_one: bool,
                mapping_num: int) -> torch.Tensor | None:
        return random_mapping(num_source, num_target, seed, many_to_one, mapping_num)


class FrequencyMapping(LabelMapping):
    name = "flm"

    def recomputes(self, epoch: int, mapping_interval: int) -> bool:
        return epoch == 0


class IterativeMapping(LabelMapping):
    name = "ilm"

    def recomputes(self, epoch: int, mapping_interval: int) -> bool:
        return epoch % mapping_interval == 0


class FullyConnected(LabelMapping):
    name = "fm"
    fully_connected = True

    def check(self, num_source: int, num_target: int, many_to_one: bool,
              mapping_num: int) -> None:
        if mapping_num != 1:
            raise HiddenCostError(
                f"mapping_num {mapping_num} has no meaning for fm (a dense K′ → K layer); use 1")


def bayesian_weights(counts: torch.Tensor, laplace: float) -> torch.Tensor:
    """ω from a K′ × K matrix F (see the module docstring): rows divided by their sum + λ,
    then columns normalised to sum to 1 (a zero column stays zero). float64 in, float32 out."""
    p = counts / (counts.sum(dim=1, keepdim=True) + laplace)
    column = p.sum(dim=0, keepdim=True)
    return torch.where(column > 0, p / torch.where(column > 0, column, 1.0), 0.0).float()


def top_k_of(ratio: float, num_target: int) -> int:
    """BLM+'s k: ⌊ratio · K⌋, at least 1 (the reference's int(K · ratio) is 0 below
    K = 7 at 0.15, which would leave no mass at all)."""
    return max(1, int(num_target * ratio))


def source_mass(logits: torch.Tensor, labels: torch.Tensor, num_target: int,
                top_k: int | None) -> torch.Tensor:
    """The K′ × K contribution of a batch of fp32 source ``logits`` with target ``labels`` to
    F: one-hot top-1 counts (``top_k`` None, BLM) or the softmax probabilities of each
    example's top k sources (BLM+). float64."""
    if top_k is None:
        mass = torch.zeros_like(logits, dtype=torch.float64)
        mass.scatter_(1, logits.argmax(1, keepdim=True), 1.0)
    else:
        probs = logits.double().softmax(dim=1)
        values, indices = probs.topk(top_k, dim=1)
        mass = torch.zeros_like(probs).scatter_(1, indices, values)
    by_target = torch.zeros(num_target, logits.shape[1], dtype=torch.float64,
                            device=logits.device)
    by_target.index_add_(0, labels.to(logits.device), mass)
    return by_target.T


class BayesianMapping(IterativeMapping):
    """BLM (``top_k`` False) or BLM+ (True): ω recomputed when ILM would remap."""

    reweights = True

    def __init__(self, name: str, top_k: bool) -> None:
        self.name, self.top_k = name, top_k

    def check(self, num_source: int, num_target: int, many_to_one: bool,
              mapping_num: int) -> None:
        if mapping_num != 1:
            raise HiddenCostError(f"mapping_num {mapping_num} has no meaning for {self.name} "
                                  "(a weight over every source class); use 1")


#: The registered label mappings by name.
MAPPINGS: Registry[LabelMapping] = Registry("label mapping")

for _mapping in (RandomMapping(), FrequencyMapping(), IterativeMapping(), FullyConnected(),
                 BayesianMapping("blm", top_k=False), BayesianMapping("blm+", top_k=True)):
    MAPPINGS.add(_mapping.name, _mapping)

"""Label mappings as registered strategies: what a VP run's output mapping is and when it moves.

==========  ================================================================================
name        strategy
==========  ================================================================================
``rlm``     a seeded random choice of K (K·m) distinct source classes, fixed for the run
``flm``     the greedy frequency mapping, computed once with the initial prompt (epoch 0)
``ilm``     the frequency mapping recomputed at the start of epoch e when e mod k = 0
            (``mapping_interval`` k; k = 1: every epoch, so epoch 0 is FLM)
``fm``      a trainable fully-connected layer K′ → K on the source logits (AutoVP)
==========  ================================================================================

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


#: The registered label mappings by name.
MAPPINGS: Registry[LabelMapping] = Registry("label mapping")

for _mapping in (RandomMapping(), FrequencyMapping(), IterativeMapping(), FullyConnected()):
    MAPPINGS.add(_mapping.name, _mapping)

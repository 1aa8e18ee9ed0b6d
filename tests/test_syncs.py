"""Host-device syncs of the training loops, counted on CPU: every call that makes the host wait
for a CUDA device (``.item()``, ``if tensor``, ``int(tensor)``, ``.tolist()``, ``.cpu()``)
goes through ``__torch_function__``, so a :class:`TorchFunctionMode` sees them whatever the
device. A training step must have none: the count of an epoch is the same for 2 steps and for
6, and is a fixed number per run per epoch."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from hiddencost.errors import TrainingDivergedError
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.schedule import EpochSums
from hiddencost.prompting.visual_prompt import PromptRun, train_visual_prompts

CPU = torch.device("cpu")
SYNCS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy"}
K_SRC, K_TGT, CANVAS, INNER = 12, 3, 16, 8


class CountSyncs(TorchFunctionMode):
    """Counts the calls in :data:`SYNCS` made inside the block, except the optimiser's own
    (Adam reads its ``step`` count, a CPU tensor on CUDA too: no sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCS and "torch/optim/" not in sys._getframe(1).f_code.co_filename:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, K_SRC)).eval()


def _runs(n_runs: int, images: int, method: str) -> list[PromptRun]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (images, 3, INNER, INNER), dtype=torch.uint8, generator=g)
    y = torch.arange(images) % K_TGT
    return [PromptRun(PadPrompt(CANVAS, INNER, (0.5,) * 3, (0.5,) * 3), x, y, method, seed)
            for seed in range(n_runs)]


def _count(n_runs: int, images: int, method: str = "rlm") -> list[str]:
    runs = _runs(n_runs, images, method)
    with CountSyncs() as counter:
        train_visual_prompts(_backbone(), runs, K_TGT, K_SRC, epochs=1, batch_size=4,
                             device=CPU)
    return counter.calls


@pytest.mark.parametrize("method", ["rlm", "fm"])
def test_a_vp_training_step_waits_for_the_device_nowhere(method):
    # 8 images: 2 steps; 24 images: 6 steps. Per run and epoch: the mapping used (tolist),
    # the finiteness check (bool) and the loss and correct sums (2 × item): 4, whatever the steps
    assert _count(2, 8, method) == _count(2, 24, method)
    assert sorted(_count(2, 24, method)) == sorted(["tolist", "__bool__", "item", "item"] * 2)


def test_epoch_sums_equal_python_sums_of_item_and_fail_on_nan():
    losses = torch.tensor([0.1234567, 2.5, 1e-3], dtype=torch.float32)
    sizes = [7, 3, 5]
    logits = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.5, 0.4]])
    labels = [torch.tensor([1] * n) for n in sizes]
    sums = EpochSums(CPU)
    expected = 0.0
    for loss, n, y, row in zip(losses, sizes, labels, logits, strict=True):
        sums.add(loss, row.expand(n, 2), y)
        expected += loss.item() * n
    sums.check(0)
    assert sums.values() == (expected, 7) and sums.seen == 15  # bitwise the Python sum
    sums.add(torch.tensor(float("nan")), logits, torch.tensor([0, 0, 0]))
    with pytest.raises(TrainingDivergedError, match="training loss became nan at epoch 3"):
        sums.check(2)


def test_an_xmr_training_step_waits_for_the_device_nowhere():
    from hiddencost.prompting.crossmodal import slot_layout
    from hiddencost.prompting.crossmodal_train import CrossModalReprogram, train_xmr

    layout, rows = slot_layout(["a", "b", "c"], None, "pad")

    def count(n: int) -> list[str]:
        torch.manual_seed(0)
        backbone = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(2, 8))
        model = CrossModalReprogram(backbone, torch.tensor([[0], [1]]), rows, 4, (0.5,) * 3,
                                    (0.5,) * 3, patch=2, layout=layout)
        tokens = torch.randint(0, 3, (n, 5), generator=torch.Generator().manual_seed(0))
        with CountSyncs() as counter:
            train_xmr(model, tokens, torch.full((n,), 3), torch.arange(n) % 2, epochs=1,
                      device=CPU, batch_size=4)
        return counter.calls

    # 8 examples: 2 steps; 24: 6 steps. Per epoch: the lengths check, finiteness, 2 sums
    assert count(8) == count(24) == ["__int__", "__bool__", "item", "item"]

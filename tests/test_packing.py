"""Packed runs (several VP runs through one backbone pass per step) against the same runs
alone, on the real packaged EfficientNet-Lite0 at a small canvas.

Tolerance: the frozen backbone sees each run's images inside a larger batch, and CPU kernels
may block a batch of 8 differently from one of 40, so logits can differ in the last float32
bits (measured: up to ~2e-5 on logits of size ~10). A few Adam steps carry that into δ at a
similar relative size; the label mappings and test predictions (argmax) are compared exactly,
the probabilities' metrics to 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from hiddencost.errors import HiddenCostError
from hiddencost.prompting.schedule import descend
from hiddencost.run import RunCache, make_config, pack_signature, run_one, run_pack

TINY = {"canvas_size": 48, "inner_size": 16, "device": "cpu", "epochs": 3, "batch_size": 8,
        "compression": {"method": "magnitude", "sparsity": 0.5}}
CLOSE = ("ece", "nll", "brier", "paper_ece", "final_train_loss")


@pytest.fixture(scope="module")
def cache():
    return RunCache()


def _pack_configs():
    return [
        make_config(method="ilm", n_shot=2, seed=0, **TINY),
        make_config(method="flm", n_shot=2, seed=1, **TINY),
        make_config(method="rlm", n_shot=2, seed=2, **TINY),
        make_config(method="fm", n_shot=2, seed=3, **TINY),
        # more batches than the others (5 vs 3): it trains alone in the pack's last steps
        make_config(method="ilm", n_shot=4, seed=4, mapping_num=2, lr=0.02, **TINY),
    ]


def test_packed_runs_equal_the_same_runs_alone(cache, tmp_path):
    cfgs = _pack_configs()
    assert len({pack_signature(c) for c in cfgs}) == 1
    alone = [run_one(c, cache=cache) for c in cfgs]
    packed = run_pack(cfgs, out_dirs=[tmp_path / str(i) for i in range(len(cfgs))], cache=cache)
    for a, p in zip(alone, packed, strict=True):
        assert p["config"] == a["config"]
        assert p["label_mapping"] == a["label_mapping"]
        assert p["mapping_history"] == a["mapping_history"]
        assert p["accuracy"] == a["accuracy"]
        assert p["per_class_accuracy"] == a["per_class_accuracy"]  # same test predictions
        for name in CLOSE:
            assert p[name] == pytest.approx(a[name], abs=1e-4), name
        for hp, ha in zip(p["history"], a["history"], strict=True):
            assert hp["mapping_changes"] == ha["mapping_changes"]
            assert hp["train_accuracy"] == ha["train_accuracy"]
            assert hp["loss"] == pytest.approx(ha["loss"], rel=1e-4)
    assert packed[3]["label_mapping"] is None  # fm
    assert len(packed[4]["label_mapping"][0]["sources"]) == 2
    assert [h["mapping_recomputed"] for h in packed[1]["history"]] == [True, False, False]
    assert (tmp_path / "4" / "result.json").is_file()


def test_runs_that_cannot_share_a_backbone_pass_are_refused(cache):
    ilm = make_config(method="ilm", n_shot=2, **TINY)
    other_epochs = make_config(method="ilm", n_shot=2, **{**TINY, "epochs": 2})
    other_model = make_config(method="ilm", n_shot=2, **{**TINY, "compression": "dense"})
    for other in (other_epochs, other_model):
        assert pack_signature(other) != pack_signature(ilm)
        with pytest.raises(HiddenCostError, match="must share"):
            run_pack([ilm, other], cache=cache)
    lp = make_config(method="lp", n_shot=2, device="cpu")
    act = make_config(method="ilm", n_shot=2, **{
        **TINY, "compression": {"method": "quantize", "weight_bits": 8, "activation_bits": 8}})
    assert pack_signature(lp) is None and pack_signature(act) is None
    with pytest.raises(HiddenCostError, match="must share"):
        run_pack([lp, lp], cache=cache)


def test_descend_with_several_optimisers_gives_each_its_own_gradient():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    opt_a, opt_b = torch.optim.SGD([a], lr=0.5), torch.optim.SGD([b], lr=0.5)
    descend([opt_a, opt_b], [(a ** 2).sum(), 3 * b.sum()], epoch=0)
    # d/da Σa² = 2a = (2, 4) → a − 0.5·(2, 4); d/db 3b = 3 → b − 1.5
    assert a.tolist() == [0.0, 0.0] and b.tolist() == [1.5]

"""TrivialAugment for the strong-VP arm: seeded per batch, the global RNG untouched, off by
default without changing any earlier run's identity."""

from __future__ import annotations

import torch

from hiddencost.prompting.augment import batch_seed, trivial_augment
from hiddencost.run import RunCache, make_config, run_one


def test_trivial_augment_repeats_for_a_seed_and_leaves_the_global_rng():
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    a, b = trivial_augment(images, 5), trivial_augment(images, 5)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(trivial_augment(images, 6), a)
    assert batch_seed(1, 2, 3) == 1_000_003 + 2 * 10_007 + 3


def test_augment_is_off_by_default_and_not_in_the_identity_until_set():
    plain = make_config(method="ilm", n_shot=2)
    assert "augment" not in plain.identity()["options"]
    strong = make_config(method="ilm", n_shot=2, options={"augment": "trivial"})
    assert strong.identity()["options"]["augment"] == "trivial"
    tiny = {"canvas_size": 48, "inner_size": 16, "device": "cpu", "n_shot": 2, "epochs": 1}
    cache = RunCache()
    a = run_one(make_config(method="ilm", **tiny), cache=cache)
    b = run_one(make_config(method="ilm", options={"augment": "trivial"}, **tiny), cache=cache)
    assert "augment" not in a.config["options"] and b.config["options"]["augment"] == "trivial"
    assert a.final_train_loss != b.final_train_loss

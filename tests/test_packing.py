"""Packed runs (several VP runs through one backbone pass per step) against the same runs
alone, on the real packaged EfficientNet-Lite0 at a small canvas.

On CPU a pack gives each run its own backbone call (``fuses_batches``), so packed runs are
bitwise the runs alone. Fused (one call over the concatenated batches, the CUDA default) the
backbone sees each run's images inside a larger batch, and CPU kernels may block a batch of 8
differently from one of 40, so logits can differ in the last float32 bits (measured: up to
~2e-5 on logits of size ~10). A few Adam steps carry that into δ at a similar relative size;
the label mappings and test predictions (argmax) are compared exactly, the probabilities'
metrics to 1e-4.
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
        make_config(method="blm", n_shot=2, seed=5, **TINY),
        make_config(method="blm+", n_shot=2, seed=6, options={"topk_ratio": 0.3}, **TINY),
        make_config(method="smm", n_shot=2, seed=7, options={"augment": "trivial"}, **TINY),
    ]


def _without_timings(record) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "wall_time_s")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(record.model_dump())


@pytest.fixture(scope="module")
def alone(cache, tmp_path_factory):
    """The pack's runs one at a time, with their output folders."""
    root = tmp_path_factory.mktemp("alone")
    return [(run_one(c, out_dir=root / str(i), cache=cache), root / str(i))
            for i, c in enumerate(_pack_configs())]


def test_packed_runs_on_cpu_are_bitwise_the_same_runs_alone(cache, alone, tmp_path):
    cfgs = _pack_configs()
    assert len({pack_signature(c) for c in cfgs}) == 1
    packed = run_pack(cfgs, out_dirs=[tmp_path / str(i) for i in range(len(cfgs))], cache=cache)
    for (a, a_dir), p, i in zip(alone, packed, range(len(cfgs)), strict=True):
        assert _without_timings(p) == _without_timings(a)
        for name in ("weights.safetensors", "prompt_history.safetensors"):
            if (a_dir / name).exists():
                assert (tmp_path / str(i) / name).read_bytes() == (a_dir / name).read_bytes()
    assert packed[3].label_mapping is None  # fm
    assert len(packed[4].label_mapping[0].sources) == 2
    assert [h.mapping_recomputed for h in packed[1].history] == [True, False, False]


def test_fused_packed_runs_equal_the_same_runs_alone_up_to_float_reordering(
        cache, alone, monkeypatch):
    from hiddencost.prompting import visual_prompt

    calls = []
    real = visual_prompt.fuses_batches

    def always(device, fuse=None):
        calls.append(device.type)
        return real(device, True)

    monkeypatch.setattr(visual_prompt, "fuses_batches", always)  # the CUDA path, on CPU
    packed = run_pack(_pack_configs(), cache=cache)
    assert calls  # the fused path ran
    for (a, _), p in zip(alone, packed, strict=True):
        assert p.config == a.config
        assert p.label_mapping == a.label_mapping
        assert p.mapping_history == a.mapping_history
        assert p.accuracy == a.accuracy
        assert p.per_class_accuracy == a.per_class_accuracy  # same test predictions
        for name in CLOSE:
            # 1e-4, or 2e-4 of the value: a tiny run's NLL (7.4, confidently wrong) moved by
            # 8e-4 on an AMX CPU, whose oneDNN blocks the fused batch differently
            assert getattr(p, name) == pytest.approx(getattr(a, name), rel=2e-4, abs=1e-4), name
        for hp, ha in zip(p.history, a.history, strict=True):
            assert hp.mapping_changes == ha.mapping_changes
            assert hp.train_accuracy == ha.train_accuracy
            assert hp.loss == pytest.approx(ha.loss, rel=1e-4)


def test_fuses_batches_only_on_cuda_unless_told():
    from hiddencost.prompting.visual_prompt import fuses_batches

    assert not fuses_batches(torch.device("cpu"))
    assert fuses_batches(torch.device("cuda"))
    assert fuses_batches(torch.device("cpu"), True)
    assert not fuses_batches(torch.device("cuda"), False)


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


# --- the study driver: packs formed from pending runs ------------------------------------

PACK_SPEC = """
name: packs
model: [efficientnet_lite0]
dataset: [digits]
compression:
  - method: none
  - method: magnitude
    sparsity: 0.5
method: [ilm, rlm, fm, lp]
n_shot: [2]
seed: [0, 1]
params: {epochs: 2, canvas_size: 48, inner_size: 16, lp_image_size: 32}
"""
#: One compression only: 6 VP runs (a pack of 4, one of 2) and 2 LP runs.
DENSE_PACK_SPEC = PACK_SPEC.replace("""  - method: magnitude
    sparsity: 0.5
""", "")


def _tasks(tmp_path, spec):
    from hiddencost.config import Environment
    from hiddencost.study.driver import build_tasks
    from hiddencost.study.layout import StudyPaths
    from hiddencost.study.spec import expand

    return build_tasks(expand(spec), StudyPaths.resolve(spec, tmp_path, None),
                       Environment(device="cpu"), spec.runner)


def test_form_packs_groups_runs_that_share_a_backbone_pass(tmp_path):
    from hiddencost.study.packing import form_packs
    from hiddencost.study.spec import parse_spec

    tasks = _tasks(tmp_path, parse_spec(PACK_SPEC))
    assert len(tasks) == 16
    packs = form_packs(tasks, 4)
    # per compression: 6 VP runs → a pack of 4 and one of 2; the 2 LP runs alone
    assert sorted(len(p) for p in packs) == [1, 1, 1, 1, 2, 2, 4, 4]
    for pack in packs:  # order inside a pack kept, one compression, VP methods only
        positions = [tasks.index(t) for t in pack]
        assert positions == sorted(positions)
        assert len({t.config["compression"]["method"] for t in pack}) == 1
        if len(pack) > 1:
            assert {t.config["method"] for t in pack} <= {"ilm", "rlm", "fm"}
    firsts = [tasks.index(p[0]) for p in packs]
    assert firsts == sorted(firsts)  # packs in expansion order of their first run
    assert form_packs(tasks, 1) == [[t] for t in tasks]
    with pytest.raises(HiddenCostError, match="at least 1"):
        form_packs(tasks, 0)


def test_full_data_runs_pack_only_when_asked(tmp_path):
    from hiddencost.study.packing import form_packs
    from hiddencost.study.spec import parse_spec

    tasks = _tasks(tmp_path, parse_spec(PACK_SPEC))
    for task in tasks:
        task.config["n_shot"] = None
    assert form_packs(tasks, 4) == [[t] for t in tasks]  # a GPU's default: alone
    assert sorted(len(p) for p in form_packs(tasks, 4, pack_full_data=True)) == [
        1, 1, 1, 1, 2, 2, 4, 4]


def test_study_run_with_pack_4_records_what_unpacked_runs_record(tmp_path):
    from typer.testing import CliRunner

    from hiddencost.cli.study import app as study_app
    from hiddencost.study.results import load_records
    from hiddencost.study.spec import parse_spec
    from hiddencost.study.store import open_store

    spec_file = tmp_path / "packs.yaml"
    spec_file.write_text(DENSE_PACK_SPEC)
    for name, extra in (("alone", []), ("packed", ["--pack", "4"])):
        result = CliRunner().invoke(study_app, [
            "run", str(spec_file), "--out", str(tmp_path / name), "--device", "cpu",
            "--no-progress", "--no-fidelity", *extra])
        assert result.exit_code == 0, result.output
    assert "8 to run now in 4 packs" in result.output
    spec = parse_spec(DENSE_PACK_SPEC)
    alone, packed = load_records(spec, tmp_path / "alone"), load_records(spec, tmp_path / "packed")
    assert len(alone) == len(packed) == 8
    for a, p in zip(alone, packed, strict=True):  # on CPU: bitwise, timings aside
        assert _without_timings(p) == _without_timings(a)
    with open_store(tmp_path / "packed" / "study.sqlite") as db:
        rows = db.rows()
    assert {r.status for r in rows.values()} == {"done"}
    assert {r.attempts for r in rows.values()} == {1}


def test_a_failing_pack_is_halved_until_each_run_has_its_own_outcome(tmp_path, monkeypatch):
    import hiddencost.run as run_module
    from hiddencost.study.worker import execute_pack

    real = run_module.run_pack
    sizes = []

    def out_of_memory_above_one(cfgs, *args, **kwargs):
        sizes.append(len(cfgs))
        if len(cfgs) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(cfgs, *args, **kwargs)

    monkeypatch.setattr(run_module, "run_pack", out_of_memory_above_one)
    from hiddencost.study.spec import parse_spec

    tasks = [t for t in _tasks(tmp_path, parse_spec(PACK_SPEC))
             if t.config["method"] == "ilm"][:3]
    for task in tasks:
        task.config["epochs"] = 1
    outcomes = execute_pack(tasks)
    assert sizes == [3, 1, 2, 1, 1]  # 3 → 1 + 2 → 1 + 1 + 1
    assert [o.key for o in outcomes] == [t.key for t in tasks]
    assert all(o.status == "done" for o in outcomes)


def test_the_halves_of_a_failed_pack_run_after_its_tensors_are_freed(tmp_path, monkeypatch):
    import weakref

    import hiddencost.run as run_module
    from hiddencost.study.spec import parse_spec
    from hiddencost.study.worker import execute_pack

    held: list[weakref.ref] = []

    def out_of_memory(cfgs, *args, **kwargs):
        activations = torch.ones(1000)  # what a failed pack's frames hold on the device
        held.append(weakref.ref(activations))
        raise RuntimeError("CUDA out of memory (simulated)")

    def alone(cfg, **kwargs):  # a half of one run: is the failed pack's tensor still alive?
        raise HiddenCostError(f"pack tensors alive: {held[0]() is not None}")

    monkeypatch.setattr(run_module, "run_pack", out_of_memory)
    monkeypatch.setattr(run_module, "run_one", alone)
    tasks = [t for t in _tasks(tmp_path, parse_spec(PACK_SPEC))
             if t.config["method"] == "ilm"][:2]
    outcomes = execute_pack(tasks)
    assert [o.error for o in outcomes] == ["HiddenCostError: pack tensors alive: False"] * 2


def test_claim_many_claims_a_packs_pending_rows_in_one_go(tmp_path):
    from hiddencost.study.spec import expand, parse_spec
    from hiddencost.study.store import Owner, open_store

    runs = expand(parse_spec(PACK_SPEC))[:3]
    me = Owner.current()
    with open_store(tmp_path / "s.sqlite") as db:
        db.add_pending("packs", runs)
        assert db.claim(runs[1].key, me)
        assert db.claim_many([r.key for r in runs], me) == [runs[0].key, runs[2].key]
        assert {r.status for r in db.rows().values()} == {"running"}


def test_runs_that_fit_by_hand():
    from hiddencost.prompting.visual_prompt import runs_that_fit

    gib = 2**30
    assert runs_that_fit(10 * gib, 1 * gib) == 8  # ⌊0.8 · 10 / 1⌋
    assert runs_that_fit(10 * gib, 3 * gib, headroom=0.9) == 3  # ⌊9 / 3⌋
    assert runs_that_fit(1 * gib, 4 * gib) == 1  # never fewer than one run

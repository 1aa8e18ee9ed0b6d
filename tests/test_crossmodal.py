"""Cross-modal reprogramming's pieces (issue "Cross-modal"), against hand-computed values and a
loop written the way the reference code tiles patches."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from hiddencost.cli import app
from hiddencost.data.sequences import char_tokens
from hiddencost.data.splice import SPLICE_RDA, read_splice
from hiddencost.errors import HiddenCostError
from hiddencost.prompting.crossmodal import (
    SlotLayout,
    SoftmaxRemapper,
    TokenPatches,
    canvas_to_input,
    needs_remapper,
    reduce_mapped,
    round_robin_sources,
    slot_layout,
    tile_patches,
    xmr_loss,
)
from hiddencost.prompting.crossmodal_train import (
    REFERENCE_MAPPING_SEED,
    CrossModalReprogram,
    mapping_image,
    output_mapping,
    predict_xmr,
    seeded_logits,
    seeded_sources,
    train_xmr,
)
from hiddencost.run import make_config


def _valued(length: int, p: int = 1) -> torch.Tensor:
    """(1, length, 3, p, p) patches: token i's patch is i + 1 everywhere."""
    return torch.arange(1.0, length + 1).view(1, length, 1, 1, 1).expand(1, length, 3, p, p)


def test_row_major_tiling_repeat_last_and_truncation_by_hand():
    # C = 2, P = 1: four slots, row-major
    two = tile_patches(_valued(3), torch.tensor([2]), canvas=2)[0, 0]
    assert two.tolist() == [[1.0, 2.0], [2.0, 2.0]]  # slots past the end repeat token 2
    six = tile_patches(_valued(6), torch.tensor([6]), canvas=2)[0, 0]
    assert six.tolist() == [[1.0, 2.0], [3.0, 4.0]]  # tokens past n = 4 are dropped
    # C = 4, P = 2: slot 1 is the top-right 2×2 block, slot 2 the bottom-left
    big = tile_patches(_valued(4, p=2), torch.tensor([4]), canvas=4)[0, 2]
    assert big.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def _reference_loop(patches: torch.Tensor, lengths: torch.Tensor, canvas: int) -> torch.Tensor:
    """Tiling one patch at a time, as the reference code loops."""
    b, _, c, p, _ = patches.shape
    per_row = canvas // p
    out = torch.zeros(b, c, canvas, canvas)
    for i in range(b):
        for slot in range(per_row * per_row):
            token = min(slot, int(lengths[i]) - 1, patches.shape[1] - 1)
            r, col = divmod(slot, per_row)
            out[i, :, r * p:(r + 1) * p, col * p:(col + 1) * p] = patches[i, token]
    return out


def test_tiling_equals_the_reference_loop_on_random_patches():
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(3, 20, 3, 4, 4, generator=gen)
    lengths = torch.tensor([20, 7, 1])
    got = tile_patches(patches, lengths, canvas=16)
    assert torch.equal(got, _reference_loop(patches, lengths, 16))


def test_tiling_refusals():
    with pytest.raises(HiddenCostError, match="not a multiple"):
        tile_patches(_valued(2, p=2), torch.tensor([2]), canvas=5)
    with pytest.raises(HiddenCostError, match="at least one token"):
        tile_patches(_valued(2), torch.tensor([0]), canvas=2)


def test_token_patches_are_tanh_bounded_and_seeded():
    a, b = TokenPatches(5, patch=2, seed=3), TokenPatches(5, patch=2, seed=3)
    tokens = torch.tensor([[0, 4, 4]])
    out = a(tokens)
    assert out.shape == (1, 3, 3, 2, 2) and float(out.detach().abs().max()) < 1.0
    assert torch.equal(out, b(tokens)) and torch.equal(out[0, 1], out[0, 2])
    assert torch.allclose(out[0, 0].flatten(), torch.tanh(a.table[0]))


def test_canvas_is_read_as_a_normalised_image():
    canvas = torch.tensor([2.0, -0.2, -3.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    got = canvas_to_input(canvas, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))[0, 0, 0]
    # 2 → 1.5 → clamp 1 → 1; −0.2 → 0.4 → −0.2; −3 → −1 → clamp 0 → −1
    assert got.tolist() == pytest.approx([1.0, -0.2, -1.0])


def test_round_robin_sources_and_reductions_by_hand():
    logits = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.2])
    # ascending ranks: 0, 5, 4, 2, 3, 1; target 0 takes ranks 0 and 2, target 1 ranks 1 and 3
    sources = round_robin_sources(logits, num_classes=2, per_class=2)
    assert sources.tolist() == [[0, 4], [5, 2]]
    batch = torch.tensor([[0.0, 1.0, 5.0, 2.0, 3.0, 9.0]])
    assert reduce_mapped(batch, sources, "max").tolist() == [[3.0, 9.0]]
    assert reduce_mapped(batch, sources, "mean").tolist() == [[1.5, 7.0]]
    with pytest.raises(HiddenCostError, match="need 8 source classes"):
        round_robin_sources(logits, num_classes=4, per_class=2)


def test_softmax_remapper_by_hand():
    assert needs_remapper(4, 2, 6) and not needs_remapper(3, 2, 6)
    remap = SoftmaxRemapper(num_source=2, num_classes=2, seed=3)
    assert torch.equal(remap.linear.weight, SoftmaxRemapper(2, 2, seed=3).linear.weight)
    assert float(remap.linear.weight.detach().abs().max()) <= 2 ** -0.5  # uniform in ±1/√K′
    with torch.no_grad():
        remap.linear.weight.copy_(torch.tensor([[1.0, 0.0], [2.0, -1.0]]))
        remap.linear.bias.copy_(torch.tensor([0.0, 0.5]))
    z = torch.tensor([[0.0, math.log(3.0)]])  # softmax: (1/4, 3/4)
    assert remap(z)[0].tolist() == pytest.approx([0.25, 0.5 - 0.75 + 0.5])


def test_loss_is_cross_entropy_plus_the_scaled_perturbation_norm():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    delta = torch.full((2, 3, 2, 2), 0.5)  # ‖δ‖₂ = sqrt(24 · 0.25) = sqrt(6)
    ce = float(F.cross_entropy(scores, labels))
    assert float(xmr_loss(scores, labels, delta, alpha=0.1)) == pytest.approx(
        ce + 0.1 * math.sqrt(6) / 2)


# --- training ------------------------------------------------------------------------------

CPU = torch.device("cpu")
MEAN = STD = (0.5, 0.5, 0.5)


def _tiny_backbone(num_source: int = 12) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(8, num_source))


def _toy_task(n: int = 24, seq: int = 10, vocab: int = 4):
    """Class 0 sequences are mostly token 0, class 1 mostly token 3: learnable from patches."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    tokens = torch.where(torch.rand(n, seq, generator=gen) < 0.8, labels[:, None] * 3,
                         torch.randint(0, vocab, (n, seq), generator=gen))
    return tokens, torch.full((n,), seq), labels


def test_sources_come_from_the_seeded_random_image():
    backbone = _tiny_backbone().eval()
    a = seeded_sources(backbone, 16, num_classes=2, per_class=3, seed=5, device=CPU)
    b = seeded_sources(backbone, 16, num_classes=2, per_class=3, seed=5, device=CPU)
    assert a.shape == (2, 3) and torch.equal(a, b) and len(set(a.flatten().tolist())) == 6
    image = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)) - 0.5) / 0.5
    with torch.no_grad():
        ranked = backbone(image)[0].argsort()  # ascending, as the reference's
    assert a[:, 0].tolist() == ranked[:2].tolist()  # ranks 0, 1 go to targets 0, 1


def test_the_mapping_image_is_the_references_normalised_input_whatever_mean_and_std():
    # the reference: torch.manual_seed(42); 2 * torch.rand(3, C, C) - 1, fed as it is
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        reference = 2 * torch.rand(3, 16, 16) - 1.0
    assert torch.equal(mapping_image(16, REFERENCE_MAPPING_SEED)[0], reference)
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean((2, 3)).repeat(1, 4)  # 12 "source classes"

    seeded_logits(Recorder(), 16, seed=42, device=CPU)
    assert torch.equal(seen[0][0], reference)  # no (x - mean) / std: ImageNet's would move it
    # with mean = std = 0.5 it is what uniform pixels normalised were (earlier records hold)
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(mapping_image(16, 7), (pixels - 0.5) / 0.5)


def test_pad_layout_shows_the_shared_pad_patch_past_the_end():
    # DNA-like characters: vocabulary a, b, c; "[PAD]" is a new row (id 3)
    layout, rows = slot_layout(["a", "b", "c"], None, "pad")
    assert (layout.pad_id, layout.start_id, layout.end_id, rows) == (3, None, None, 4)
    tokens, lengths = torch.tensor([[0, 1, 2, 0]]), torch.tensor([3])
    ids, full = layout.arrange(tokens, lengths, slots=4)
    assert ids.tolist() == [[0, 1, 2, 3]] and full.tolist() == [4]
    patches = TokenPatches(rows, patch=1, seed=0)
    canvas = tile_patches(patches(ids), full, canvas=2)[0]  # 4 slots of 1 px
    pad = torch.tanh(patches.table[3]).view(3)
    assert torch.equal(canvas[:, 1, 1], pad)  # the last slot: the pad patch
    # the old rule repeats the last token instead
    old, old_rows = slot_layout(["a", "b", "c"], None, "repeat-last")
    assert old_rows == 3
    kept = tile_patches(patches(old.arrange(tokens, lengths, 4)[0]), lengths, canvas=2)[0]
    assert torch.equal(kept[:, 1, 1], torch.tanh(patches.table[2]).view(3))


def test_word_pieces_are_framed_like_berts_and_cut_to_the_max_length():
    vocab = ["[UNK]", "x", "y", "[PAD]", "[SEP]"]  # has [PAD] and [SEP], lacks [CLS]
    layout, rows = slot_layout(vocab, ("[CLS]", "[SEP]"), "pad")
    assert (layout.pad_id, layout.start_id, layout.end_id, rows) == (3, 5, 4, 6)
    tokens, lengths = torch.tensor([[1, 2, 0], [2, 0, 0]]), torch.tensor([2, 1])
    ids, _ = layout.arrange(tokens, lengths, slots=6)
    assert ids.tolist() == [[5, 1, 2, 4, 3, 3], [5, 2, 4, 3, 3, 3]]
    # max_length 3 (the reference's 512, small): [CLS] x [SEP]; slots past it repeat slot 2
    short = SlotLayout("pad", 3, 5, 4, max_length=3)
    ids, full = short.arrange(tokens, lengths, slots=4)
    assert ids.tolist() == [[5, 1, 4], [5, 2, 4]] and full.tolist() == [3, 3]
    assert torch.equal(tile_patches(_valued(3), full[:1], canvas=2)[0, 0, 1, 1],
                       torch.tensor(3.0))  # slot 3 shows position 2's patch
    with pytest.raises(HiddenCostError, match="unknown padding 'zeros'"):
        SlotLayout("zeros", 0)


def test_training_learns_the_toy_task_and_leaves_the_backbone_alone():
    backbone = _tiny_backbone()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    tokens, lengths, labels = _toy_task()
    sources = seeded_sources(backbone.eval(), 16, 2, 3, seed=0, device=CPU)
    model = CrossModalReprogram(backbone, sources, vocab_size=4, canvas=16, mean=MEAN, std=STD,
                                patch=4, seed=0)
    history = train_xmr(model, tokens, lengths, labels, epochs=15, device=CPU, seed=0, lr=0.05)
    losses = [e.loss for e in history.epochs]
    assert losses[-1] < losses[0] and history.epochs[-1].train_accuracy >= 0.9
    scores = predict_xmr(model, tokens, lengths, CPU)
    assert scores.shape == (24, 2) and float((scores.argmax(1) == labels).double().mean()) >= 0.9
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    # seeded: the same run again gives the same losses
    again = CrossModalReprogram(_tiny_backbone(), sources, 4, 16, MEAN, STD, patch=4, seed=0)
    rerun = train_xmr(again, tokens, lengths, labels, epochs=15, device=CPU, seed=0, lr=0.05)
    assert [e.loss for e in rerun.epochs] == losses


def test_a_step_budget_stops_training_mid_epoch():
    """24 examples at batch 4 are 6 steps an epoch: 8 steps end in epoch 2, after 2 of its 6."""
    backbone = _tiny_backbone().eval()
    sources = seeded_sources(backbone, 16, 2, 3, seed=0, device=CPU)
    tokens, lengths, labels = _toy_task()

    def train(**budget):
        model = CrossModalReprogram(backbone, sources, 4, 16, MEAN, STD, patch=4, seed=0)
        return train_xmr(model, tokens, lengths, labels, epochs=5, device=CPU, **budget)

    cut = train(max_steps=8).epochs
    assert [e.epoch for e in cut] == [1, 2] and [e.steps for e in cut] == [6, 8]
    full = train().epochs
    assert cut[0].loss == full[0].loss and full[0].steps is None  # same first epoch
    assert cut[1].loss != full[1].loss  # the mean over 8 examples, not 24
    assert len(train(max_steps=100).epochs) == 5  # the epochs end first
    with pytest.raises(HiddenCostError, match="method .ilm. on .* has no option .max_steps."):
        make_config(method="ilm", max_steps=5).resolved()


def test_remapper_replaces_sources_when_k_times_m_exceeds_the_source_classes():
    backbone = _tiny_backbone().eval()  # 12 source classes
    sources, remapper = output_mapping(backbone, 16, 2, 6, seed=0, device=CPU)
    assert remapper is None and torch.equal(
        sources, seeded_sources(backbone, 16, 2, 6, seed=0, device=CPU))
    sources, remapper = output_mapping(backbone, 16, 2, 7, seed=0, device=CPU)
    assert sources is None and remapper.linear.weight.shape == (2, 12)
    start = remapper.linear.weight.detach().clone()
    model = CrossModalReprogram(backbone, None, 4, 16, MEAN, STD, patch=4, remapper=remapper)
    tokens, lengths, labels = _toy_task()
    history = train_xmr(model, tokens, lengths, labels, epochs=10, device=CPU, lr=0.05)
    assert history.epochs[-1].loss < history.epochs[0].loss
    assert not torch.equal(remapper.linear.weight, start)  # trained with the table
    assert set(model.learned_tensors()) == {"patches.table", "remapper.weight", "remapper.bias"}
    with pytest.raises(ValueError, match="either sources or a remapper"):
        CrossModalReprogram(backbone, sources, 4, 16, MEAN, STD)


@pytest.mark.skipif(not SPLICE_RDA.is_file(), reason=f"{SPLICE_RDA} is absent (r-cran-mlbench)")
def test_splice_through_the_real_efficientnet_lite0():
    """Splice's characters as tokens (A, C, G, T = 0..3) through the packaged ImageNet model:
    60 tokens on a 224-px canvas of 16-px patches (196 slots, the rest repeat the last base)."""
    pytest.importorskip("rdata")
    from hiddencost.backbones import create_model
    from hiddencost.frozen import prepare_frozen

    data = read_splice()
    pick = torch.cat([torch.nonzero(torch.from_numpy(data.labels) == k)[:4, 0] for k in range(3)])
    tokens = torch.tensor([["ACGT".index(b) for b in data.sequences[i]] for i in pick.tolist()])
    labels = torch.from_numpy(data.labels)[pick]
    lengths = torch.full((len(pick),), 60)
    model, info = create_model("efficientnet_lite0")
    backbone = prepare_frozen(model, CPU, 224)
    sources = seeded_sources(backbone, 224, 3, 10, seed=0, device=CPU)
    reprogram = CrossModalReprogram(backbone, sources, 4, 224, info.mean, info.std, seed=0)
    history = train_xmr(reprogram, tokens, lengths, labels, epochs=1, device=CPU, seed=0)
    assert math.isfinite(history.epochs[0].loss) and sources.shape == (3, 10)
    scores = predict_xmr(reprogram, tokens, lengths, CPU)
    assert scores.shape == (12, 3) and torch.isfinite(scores).all()


# --- the registered method, run end to end ---------------------------------------------------

def test_character_tokens_and_their_refusal():
    tokens, lengths = char_tokens(["ACG", "T"], "ACGT")
    assert tokens.tolist() == [[0, 1, 2], [3, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(HiddenCostError, match="sequence 1 has 'N', not one of 'ACGT'"):
        char_tokens(["A", "AN"], "ACGT")


def test_methods_and_datasets_must_share_a_modality():
    with pytest.raises(HiddenCostError, match="'xmr' reads sequence data and dataset 'digits' "
                                              "holds image data; use ilm, flm, rlm, fm, blm, "
                                              "blm\\+, smm, lp, ft, bitfit, lora, vpt"):
        make_config(method="xmr").resolved()
    with pytest.raises(HiddenCostError, match="'ilm' reads image data.*use xmr"):
        make_config(method="ilm", dataset="splice").resolved()


def test_protocol_defaults_come_from_the_method():
    xmr = make_config(method="xmr", dataset="splice", n_shot=10).resolved()
    assert (xmr.lr, xmr.batch_size, xmr.options) == (1e-3, 4, {
        "mapping_num": 10, "max_steps": None, "padding": "pad", "mapping_seed": "run",
        "test_every_epoch": False})
    ilm = make_config(method="ilm", n_shot=10)
    assert (ilm.resolved().lr, ilm.resolved().batch_size,
            ilm.resolved().options["mapping_num"]) == (0.01, 32, 1)
    assert ilm.identity()["lr"] == 0.01 and ilm.identity()["options"]["mapping_num"] == 1


@pytest.mark.skipif(not SPLICE_RDA.is_file(), reason=f"{SPLICE_RDA} is absent (r-cran-mlbench)")
def test_xmr_on_splice_writes_a_complete_record(tmp_path):
    pytest.importorskip("rdata")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", "splice", "--method", "xmr",
                                      "--n-shot", "10", "--epochs", "1", "--device", "cpu",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["n_train"] == 30 and record["n_test"] == 638
    assert (record["config"]["lr"], record["config"]["batch_size"]) == (0.001, 4)
    assert len(record["label_mapping"]) == 3
    assert all(len(e["sources"]) == 10 for e in record["label_mapping"])
    assert 0.0 <= record["accuracy"] <= 1.0 and len(record["per_class_accuracy"]) == 3
    assert (out / "weights.safetensors").is_file()


def test_sequence_datasets_have_no_fidelity_targets():
    from hiddencost.study.fidelity import fidelity_targets
    from hiddencost.study.spec import parse_spec

    grid = ("name: s\ndataset: [{d}]\nmethod: [{m}]\nn_shot: [1]\n"
            "compression: [{{method: none}}, {{method: magnitude, sparsity: 0.5}}]\n")
    assert fidelity_targets(parse_spec(grid.format(d="splice", m="xmr"))) == []
    assert [t.dataset for t in fidelity_targets(parse_spec(grid.format(d="digits", m="ilm")))
            ] == ["digits"]
    with pytest.raises(HiddenCostError, match="'ilm' reads image data"):
        parse_spec(grid.format(d="splice", m="ilm"))


@pytest.mark.slow  # 15 s on this CPU; the remapper's unit tests above cover its logic
@pytest.mark.skipif(not SPLICE_RDA.is_file(), reason=f"{SPLICE_RDA} is absent (r-cran-mlbench)")
def test_xmr_with_more_sources_than_imagenet_has_trains_a_remapper(tmp_path):
    """3 classes × 400 sources > 1,000 ImageNet classes: the softmax remapper is used."""
    pytest.importorskip("rdata")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", "splice", "--method", "xmr",
                                      "--n-shot", "2", "--epochs", "1", "--mapping-num", "400",
                                      "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["label_mapping"] is None and record["config"]["options"]["mapping_num"] == 400
    assert 0.0 <= record["accuracy"] <= 1.0
    from safetensors.torch import load_file

    saved = load_file(str(out / "weights.safetensors"))
    # A, C, G, T and the pad row
    assert saved["remapper.weight"].shape == (3, 1000) and saved["patches.table"].shape[0] == 5


def test_a_stopped_xmr_run_resumes_from_its_state_to_the_same_result(tmp_path):
    from hiddencost.prompting.run_state import StateFile

    tokens, lengths, labels = _toy_task()
    sources = seeded_sources(_tiny_backbone().eval(), 16, 2, 3, seed=0, device=CPU)

    def fresh():
        return CrossModalReprogram(_tiny_backbone(), sources, 4, 16, MEAN, STD, patch=4, seed=0)

    def train(model, **kw):  # 24 examples at batch 4: 6 steps an epoch, 14 steps in all
        return train_xmr(model, tokens, lengths, labels, epochs=4, device=CPU, seed=0, lr=0.05,
                         max_steps=14, **kw)

    whole = fresh()
    expected = train(whole)

    def stop(record):
        if record.epoch == 2:
            raise KeyboardInterrupt  # a kill just after epoch 2's state was saved

    state = StateFile(tmp_path / "state.pt", "xmr-test")
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), state=state, on_epoch=stop)
    seen = []
    resumed = fresh()
    history = train(resumed, state=state, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [3]  # only the cut-short third epoch was trained again
    assert [r.model_dump(exclude={"seconds"}) for r in history.epochs] == [
        r.model_dump(exclude={"seconds"}) for r in expected.epochs]
    ours, theirs = resumed.learned_tensors(), whole.learned_tensors()
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)


@pytest.mark.skipif(not SPLICE_RDA.is_file(), reason=f"{SPLICE_RDA} is absent (r-cran-mlbench)")
def test_xmr_runs_record_their_options_honour_the_curve_and_the_reference_seed(tmp_path):
    from hiddencost.run import RunCache, run_one

    pytest.importorskip("rdata")
    cache = RunCache()
    base = {"method": "xmr", "dataset": "splice", "n_shot": 1, "device": "cpu",
            "canvas_size": 64}
    curve = run_one(make_config(**base, epochs=2, seed=0, options={
        "mapping_seed": "reference", "test_every_epoch": True}), cache=cache)
    other = run_one(make_config(**base, epochs=1, seed=3,
                                options={"mapping_seed": "reference"}), cache=cache)
    assert curve.config["options"]["padding"] == "pad"  # the record says which
    # the reference's fixed image picks the sources whatever the run's seed
    assert curve.label_mapping == other.label_mapping
    accuracies = [e.test_accuracy for e in curve.history]
    assert len(accuracies) == 2 and accuracies[-1] == curve.accuracy  # the final epoch's


# --------------------------------------------------------------------------- the used tokens only


@pytest.mark.parametrize(("rows", "width", "chunk"), [
    (1000, 768, 64), (37, 3, 16), (50, 5, 16), (10, 768, 4096), (1, 48, 16)])
def test_the_used_rows_start_as_the_whole_tables_rows_bit_for_bit(rows, width, chunk):
    from hiddencost.prompting.crossmodal import seeded_rows

    whole = torch.randn(rows, width, generator=torch.Generator().manual_seed(5))
    keep = torch.unique(torch.tensor([0, 3 % rows, rows // 2, rows - 1]))
    assert torch.equal(seeded_rows(rows, width, 5, keep, chunk=chunk), whole[keep])


def test_a_model_on_the_used_tokens_draws_the_canvases_of_the_whole_table():
    from hiddencost.prompting.crossmodal import used_token_ids

    tokens, lengths = torch.tensor([[5, 9, 0], [9, 9, 2]]), torch.tensor([2, 3])
    layout, rows = slot_layout([f"t{i}" for i in range(60)], ("[CLS]", "[SEP]"), "pad")
    used = used_token_ids((tokens,), layout)
    assert used.tolist() == [0, 2, 5, 9, 60, 61, 62] and rows == 63  # [PAD] [CLS] [SEP]: 60-62
    backbone = _tiny_backbone().eval()
    sources = seeded_sources(backbone, 16, 2, 3, seed=0, device=CPU)
    whole, small = (CrossModalReprogram(backbone, sources, rows, 16, MEAN, STD, patch=4, seed=3,
                                        layout=layout, token_ids=ids) for ids in (None, used))
    assert small.patches.table.shape == (7, 48) and whole.patches.table.shape == (63, 48)
    assert torch.equal(small.perturbation(tokens, lengths), whole.perturbation(tokens, lengths))
    assert small.learned_tensors()["patches.token_ids"].tolist() == used.tolist()
    # Adam updates each entry on its own and unused rows get no gradient: training is the same
    labels = torch.tensor([0, 1])
    runs = [train_xmr(m, tokens, lengths, labels, epochs=3, device=CPU, seed=0, lr=0.05,
                      batch_size=1) for m in (whole, small)]
    assert [e.loss for e in runs[0].epochs] == [e.loss for e in runs[1].epochs]
    assert torch.equal(small.patches.table, whole.patches.table[used])


def test_a_huge_vocabulary_costs_only_the_tokens_a_task_uses(tmp_path):
    """The red team's 400k-token tokenizer made an 8.3 GB table; the table now has a row per
    token the task uses (here 10 of a 100,003-row table: 30 KB instead of 307 MB)."""
    pytest.importorskip("tokenizers")
    from types import SimpleNamespace

    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers

    from hiddencost.data.text import text_task
    from hiddencost.prompting.methods import CrossModal, CrossModalOptions

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(99_999)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    task = text_task("t", ["a", "b"], ["w5 w7 w5", "w99998 w3"], np.array([0, 1]),
                     ["w7 w12 w9"], np.array([1]), "note", tokenizer=str(path))
    assert len(task.vocab) == 100_000
    layout, rows, used = CrossModal.layout(task, SimpleNamespace(options=CrossModalOptions()))
    # padding 0, w3 w5 w7 w9 w12 w99998, and [PAD] [CLS] [SEP] appended after the vocabulary
    assert rows == 100_003 and used.tolist() == [0, 4, 6, 8, 10, 13, 99_999, 100_000,
                                                 100_001, 100_002]
    patches = TokenPatches(rows, 16, seed=0, token_ids=used)
    assert patches.table.shape == (10, 768)

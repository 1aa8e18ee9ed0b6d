"""Tests for hiddencost.prompting: pad prompt geometry, label mappings, schedule, VP and LP.

Every expected value is worked out by hand in the comments (DESIGN §3). The backbones are tiny
timm-like conv nets defined here (K′ = 12 "source classes"), on 16×16 canvases, so the whole
file runs in a few seconds on a CPU; the real EfficientNet is tested in test_backbones.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError, TrainingDivergedError
from hiddencost.prompting import pad_prompt as pad_prompt_module
from hiddencost.prompting.label_mapping import (
    FullyConnectedMapping,
    apply_mapping,
    check_class_counts,
    frequency_mapping,
    greedy_mapping,
    prediction_counts,
    random_mapping,
)
from hiddencost.prompting.linear_probe import (
    ResizeNormalize,
    extract_features,
    train_linear_head,
)
from hiddencost.prompting.pad_prompt import PadPrompt, border_mask, pad_amounts
from hiddencost.prompting.schedule import adam_multistep, epoch_batches, milestones
from hiddencost.prompting.visual_prompt import (
    ReprogrammedModel,
    predict_logits,
    source_predictions,
    train_visual_prompt,
)

CPU = torch.device("cpu")
K_SRC = 12  # K′: source classes of the tiny backbone
K_TGT = 3  # K: target classes of the synthetic task
CANVAS, INNER = 16, 8  # margin 8 -> pads (4, 4, 4, 4); the image sits at rows/cols 4..11
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
EPOCHS = 5  # milestones ⌊2.5⌋ = 2, ⌊3.6⌋ = 3
LR_BY_EPOCH = [0.01, 0.01, 0.001, 0.0001, 0.0001]  # lr 0.01, ×0.1 at epoch 2, ×0.1 at epoch 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: intra-op threads only add overhead (and stall badly on a loaded 2-core box).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# Tiny timm-like backbone and synthetic task
# --------------------------------------------------------------------------------------------


class TinyNet(nn.Module):
    """conv → BN → ReLU (forward_features) → 2×2 avg pool → flatten [→ fc to K′] (forward_head)."""

    def __init__(self, width: int = 6, num_classes: int = K_SRC) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class NaNNet(nn.Module):
    """A backbone whose logits are NaN (the loss is NaN from the first batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, K_SRC)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3))) * float("nan")


def make_backbone(seed: int = 1, frozen: bool = True) -> TinyNet:
    """Deterministic TinyNet with non-trivial BN running stats (so eval vs train mode differs)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TinyNet()
        with torch.no_grad():
            # Scale up so that the top-1 source class reacts to the prompt within a few epochs.
            net.conv.weight.mul_(3.0)
            net.fc.weight.mul_(3.0)
            net.bn.running_mean.uniform_(-0.2, 0.2)
            net.bn.running_var.uniform_(0.5, 2.0)
    if frozen:
        for p in net.parameters():
            p.requires_grad_(False)
    return net.eval()


def make_task(n_per_class: int = 8, size: int = INNER, seed: int = 0):
    """uint8 images (3·n, 3, size, size); class c has a bright channel c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(K_TGT).repeat_interleave(n_per_class)
    imgs = torch.randint(0, 80, (len(labels), 3, size, size), generator=g)
    for c in range(K_TGT):
        imgs[labels == c, c] += 150
    return imgs.to(torch.uint8), labels


def new_prompt() -> PadPrompt:
    return PadPrompt(CANVAS, INNER, MEAN, STD)


def train(method: str, backbone: nn.Module | None = None, seed: int = 0, lr: float = 0.2, **kw):
    imgs, labels = make_task()
    return train_visual_prompt(
        backbone if backbone is not None else make_backbone(),
        new_prompt(),
        imgs,
        labels,
        num_classes=K_TGT,
        num_source=K_SRC,
        method=method,
        epochs=kw.pop("epochs", EPOCHS),
        batch_size=8,  # 24 images -> 3 batches per epoch
        seed=seed,
        device=CPU,
        lr=lr,
        **kw,
    )


def mapping_with_delta(backbone: nn.Module, delta: torch.Tensor | None,
                       mapping_num: int = 1) -> list[int] | list[list[int]]:
    """FLM/ILM mapping of the training set seen through a fresh prompt carrying ``delta``
    (``mapping_num`` sources per target)."""
    imgs, labels = make_task()
    prompt = new_prompt()
    if delta is not None:
        with torch.no_grad():
            prompt.delta.copy_(delta)
    model = ReprogrammedModel(backbone, prompt, K_SRC, K_TGT)
    preds = source_predictions(model, imgs, CPU)
    return frequency_mapping(preds, labels, K_SRC, K_TGT, mapping_num=mapping_num).tolist()


def strip_seconds(history) -> list[dict]:
    return [r.model_dump(exclude={"seconds"}) for r in history.epochs]


# --------------------------------------------------------------------------------------------
# 1. Pad geometry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canvas", "inner", "expected"),
    [
        # C − s = 192: lead ⌊193/2⌋ = 96, trail ⌊192/2⌋ = 96
        (224, 32, (96, 96, 96, 96)),
        # C − s = 96: lead ⌊97/2⌋ = 48, trail 48
        (224, 128, (48, 48, 48, 48)),
        # C − s = 193 (odd): lead ⌊194/2⌋ = 97 on the left/top, trail ⌊193/2⌋ = 96
        (224, 31, (97, 96, 97, 96)),
        # C − s = 7: lead ⌊8/2⌋ = 4, trail ⌊7/2⌋ = 3; 4 + 3 + 3 = 10
        (10, 3, (4, 3, 4, 3)),
        (16, 8, (4, 4, 4, 4)),
        (7, 7, (0, 0, 0, 0)),
        # C − s = 1: the single extra pixel goes left/top
        (8, 7, (1, 0, 1, 0)),
    ],
)
def test_pad_amounts(canvas, inner, expected):
    left, right, top, bottom = pad_amounts(canvas, inner)
    assert (left, right, top, bottom) == expected
    assert left + inner + right == canvas and top + inner + bottom == canvas


@pytest.mark.parametrize(("canvas", "inner"), [(10, 11), (224, 225), (10, 0), (10, -3)])
def test_pad_amounts_rejects_bad_inner_size(canvas, inner):
    with pytest.raises(HiddenCostError):
        pad_amounts(canvas, inner)
    with pytest.raises(HiddenCostError):
        border_mask(canvas, inner)


def test_border_mask_small_by_hand():
    # C = 10, s = 3: the image occupies rows 4, 5, 6 and columns 4, 5, 6 (see pad_amounts).
    mask = border_mask(10, 3)
    assert mask.shape == (3, 10, 10)
    expected = torch.ones(3, 10, 10)
    for i in (4, 5, 6):
        for j in (4, 5, 6):
            expected[:, i, j] = 0
    assert torch.equal(mask, expected)
    assert int((mask == 0).sum()) == 3 * 3**2  # 27 zeros
    assert int((mask == 1).sum()) == 3 * 100 - 27  # 273 ones, nothing else
    # the row/column just outside the image is border
    assert mask[:, 3, 4:7].eq(1).all() and mask[:, 7, 4:7].eq(1).all()
    assert mask[:, 4:7, 3].eq(1).all() and mask[:, 4:7, 7].eq(1).all()


def test_border_mask_odd_margin_224():
    # s = 31: image rows/cols 97 .. 127 (97 + 31 − 1); 96 pixels of border after it.
    mask = border_mask(224, 31)
    assert int((mask == 0).sum()) == 3 * 31 * 31
    assert mask[:, 97:128, 97:128].eq(0).all()
    assert mask[:, 96, 97:128].eq(1).all() and mask[:, 128, 97:128].eq(1).all()
    assert mask[:, 97:128, 96].eq(1).all() and mask[:, 97:128, 128].eq(1).all()
    assert int((mask == 1).sum()) == 3 * (224 * 224 - 31 * 31)


# --------------------------------------------------------------------------------------------
# 2. PadPrompt
# --------------------------------------------------------------------------------------------

# C = 16, s = 7: lead ⌊10/2⌋ = 5, trail ⌊9/2⌋ = 4 -> image at rows/cols 5..11.
PC, PS, P0 = 16, 7, 5
IMG = (slice(None), slice(None), slice(P0, P0 + PS), slice(P0, P0 + PS))


def test_pad_prompt_init_and_zero_delta_image():
    prompt = PadPrompt(PC, PS, MEAN, STD)
    assert prompt.delta.shape == (3, PC, PC) and prompt.delta.requires_grad
    assert torch.equal(prompt.delta.detach(), torch.zeros(3, PC, PC))
    x = torch.rand(2, 3, PS, PS, generator=torch.Generator().manual_seed(0))
    out = prompt.prompted_image(x)
    assert out.shape == (2, 3, PC, PC)
    # interior: x + sigmoid(0)·0 = x exactly
    assert torch.equal(out[IMG], x)
    # border: 0 (zero pad) + sigmoid(0)·1 = 0.5 exactly
    border = border_mask(PC, PS).bool().expand(2, 3, PC, PC)
    assert torch.equal(out[border], torch.full((int(border.sum()),), 0.5))
    # visual(): sigmoid(δ) on the border, 0 over the image
    vis = prompt.visual()
    assert torch.equal(vis, 0.5 * border_mask(PC, PS))


def test_pad_prompt_normalises_after_prompting():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    prompt = PadPrompt(PC, PS, mean, std)
    with torch.no_grad():
        prompt.delta.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.rand(2, 3, PS, PS, generator=torch.Generator().manual_seed(2))
    out = prompt(x)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (prompt.prompted_image(x) - m) / s, rtol=0, atol=1e-6)
    # interior pixel by hand: (x − μ_c)/σ_c
    torch.testing.assert_close(out[IMG], (x - m) / s, rtol=0, atol=1e-6)
    # with δ = 0 the border is (0.5 − μ)/σ = (0.4/0.5, 0.3/0.25, 0.2/2) = (0.8, 1.2, 0.1)
    zero = PadPrompt(PC, PS, mean, std)
    corner = zero(x)[:, :, 0, 0]
    torch.testing.assert_close(corner, torch.tensor([[0.8, 1.2, 0.1]] * 2), rtol=0, atol=1e-6)


class _InterpolateSpy:
    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, x, *args, **kwargs):
        self.calls.append(kwargs.get("size"))
        return self.real(x, *args, **kwargs)


def test_pad_prompt_resizes_only_when_needed(monkeypatch):
    spy = _InterpolateSpy(F.interpolate)
    monkeypatch.setattr(pad_prompt_module.F, "interpolate", spy)
    prompt = PadPrompt(PC, PS, MEAN, STD)
    g = torch.Generator().manual_seed(3)

    x = torch.rand(2, 3, PS, PS, generator=g)
    assert torch.equal(prompt.prompted_image(x)[IMG], x)
    assert spy.calls == []  # already s×s: no resize

    big = torch.rand(2, 3, 14, 14, generator=g)
    out = prompt.prompted_image(big)
    assert out.shape == (2, 3, PC, PC)
    assert spy.calls == [(PS, PS)]
    ref = spy.real(big, size=(PS, PS), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(out[IMG], ref, rtol=0, atol=1e-6)

    # non-square input is resized too; a constant image stays constant under resizing
    rect = torch.full((1, 3, 5, 9), 0.25)
    out = prompt.prompted_image(rect)
    assert out.shape == (1, 3, PC, PC) and len(spy.calls) == 2
    torch.testing.assert_close(out[IMG], torch.full((1, 3, PS, PS), 0.25), rtol=0, atol=1e-6)


def test_pad_prompt_gradient_only_on_border():
    std = (0.5, 0.25, 2.0)
    prompt = PadPrompt(PC, PS, (0.0, 0.0, 0.0), std)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, PS, PS, generator=g)
    w = torch.randn(2, 3, PC, PC, generator=g)
    (prompt(x) * w).sum().backward()
    grad = prompt.delta.grad
    assert torch.equal(grad[:, P0 : P0 + PS, P0 : P0 + PS], torch.zeros(3, PS, PS))
    # d/dδ of Σ_b w_b·(pad(x_b) + sigmoid(δ)·M)/σ at δ = 0: M · sigmoid′(0) · Σ_b w_b / σ,
    # with sigmoid′(0) = 0.25.
    mask = border_mask(PC, PS)
    expected = mask * 0.25 * w.sum(0) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    assert (grad[mask.bool()] != 0).all()


def test_pad_prompt_pixels_stay_in_unit_interval():
    prompt = PadPrompt(PC, PS, MEAN, STD)
    with torch.no_grad():
        prompt.delta.copy_(100 * torch.randn(3, PC, PC, generator=torch.Generator().manual_seed(5)))
    x = torch.rand(4, 3, PS, PS, generator=torch.Generator().manual_seed(6))
    x[0] = 1.0  # extremes of the input range
    x[1] = 0.0
    out = prompt.prompted_image(x)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(out[IMG], x)  # the prompt never leaks into the image region


# --------------------------------------------------------------------------------------------
# 3. greedy_mapping
# --------------------------------------------------------------------------------------------


def reference_greedy(counts: list[list[int]]) -> list[int]:
    """Independent greedy: scan remaining cells row-major, keep the first strict maximum."""
    n_src, n_tgt = len(counts), len(counts[0])
    rows, cols, mapping = set(range(n_src)), set(range(n_tgt)), [-1] * n_tgt
    for _ in range(n_tgt):
        best = None
        for s in range(n_src):
            for t in range(n_tgt):
                if s in rows and t in cols and (best is None or counts[s][t] > best[0]):
                    best = (counts[s][t], s, t)
        _, s, t = best
        mapping[t] = s
        rows.discard(s)
        cols.discard(t)
    return mapping


def greedy(rows: list[list[int]], **kw) -> list[int]:
    return greedy_mapping(torch.tensor(rows), **kw).tolist()


def test_greedy_plain_case():
    #       t0 t1 t2
    # s0  [ 5, 0, 1]     5 at (0,0): t0 <- s0; drop row 0, col 0
    # s1  [ 0, 4, 0]     4 at (1,1): t1 <- s1
    # s2  [ 1, 0, 3]     3 at (2,2): t2 <- s2
    # s3  [ 0, 0, 0]
    assert greedy([[5, 0, 1], [0, 4, 0], [1, 0, 3], [0, 0, 0]]) == [0, 1, 2]
    # a permuted version: the assignment follows the counts, not the indices
    #       t0 t1 t2
    # s0  [ 0, 0, 2]     6 at (3,0): t0 <- s3; 4 at (1,1): t1 <- s1; 2 at (0,2): t2 <- s0
    # s1  [ 1, 4, 0]
    # s2  [ 0, 1, 1]
    # s3  [ 6, 0, 0]
    assert greedy([[0, 0, 2], [1, 4, 0], [0, 1, 1], [6, 0, 0]]) == [3, 1, 0]


def test_greedy_takes_largest_cell_first():
    #       t0 t1
    # s0  [ 4, 5]    per-column argmax: t0 -> s0 and t1 -> s0 (a conflict);
    # s1  [ 3, 0]    targets in order:  t0 -> s0 (4), then t1 -> s2 (2)   = [0, 2].
    # s2  [ 0, 2]    largest cell first: 5 at (0,1): t1 <- s0; col 0 among s1, s2: 3 -> t0 <- s1.
    assert greedy([[4, 5], [3, 0], [0, 2]]) == [1, 0]


def test_greedy_is_not_the_optimal_assignment():
    #       t0 t1
    # s0  [ 5, 4]    greedy: 5 at (0,0): t0 <- s0, then t1 <- s1 (0)  -> [0, 1], total 5;
    # s1  [ 4, 0]    an optimal (Hungarian) assignment would be t0 <- s1, t1 <- s0, total 8.
    assert greedy([[5, 4], [4, 0]]) == [0, 1]


def test_greedy_ties_row_major_first_maximum():
    #       t0 t1 t2
    # s0  [ 0, 3, 1]   maxima 3 at (0,1), (1,0), (1,1), (2,2); row-major first is (0,1):
    # s1  [ 3, 3, 0]   t1 <- s0. Left: s1 [3, ·, 0], s2 [1, ·, 3]: first 3 is (1,0): t0 <- s1.
    # s2  [ 1, 0, 3]   Then t2 <- s2.  -> [1, 0, 2]
    # (the last maximum would pick (2,2), then (1,1), then (0,0) -> [0, 1, 2])
    assert greedy([[0, 3, 1], [3, 3, 0], [1, 0, 3]]) == [1, 0, 2]
    # all cells equal: (0,0), then (1,1), (2,2) -> identity (last-max would reverse it)
    assert greedy([[2, 2, 2]] * 4) == [0, 1, 2]
    # tie inside one row: s0 [2, 2] -> (0,0) first: t0 <- s0, t1 <- s1 (the only row left)
    assert greedy([[2, 2], [0, 1]]) == [0, 1]
    # tie inside one column: col 0 has 2 at s1 and s2 -> lowest source s1
    assert greedy([[0, 0], [2, 0], [2, 1]]) == [1, 2]


def test_greedy_all_zero_columns_few_shot():
    #       t0 t1 t2 t3        2 at (2,0): t0 <- s2.  1 at (3,1): t1 <- s3.
    # s0  [ 0, 0, 0, 0]      left: rows 0, 1, 4; cols 2, 3 -- all zeros.
    # s1  [ 0, 0, 0, 0]      first zero row-major is (0,2): t2 <- s0; then (1,3): t3 <- s1.
    # s2  [ 2, 0, 0, 0]
    # s3  [ 0, 1, 0, 0]
    # s4  [ 0, 0, 0, 0]
    counts = [[0, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    assert greedy(counts) == [2, 3, 0, 1]
    #       t0 t1 t2        3 at (0,0): t0 <- s0; 1 at (1,2): t2 <- s1;
    # s0  [ 3, 1, 0]      t1's remaining cells (s2, s3) are 0 -> lowest remaining source s2.
    # s1  [ 0, 0, 1]      (t1's only non-zero count sat in the already used row s0.)
    # s2  [ 0, 0, 0]
    # s3  [ 0, 0, 0]
    assert greedy([[3, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]) == [0, 2, 1]
    # nothing at all: identity
    assert greedy([[0] * 3] * 5) == [0, 1, 2]


def test_greedy_matches_reference_and_is_injective():
    g = torch.Generator().manual_seed(7)
    for trial in range(40):
        n_src = 3 + trial % 10
        n_tgt = 1 + trial % n_src
        # small integers -> many ties
        counts = torch.randint(0, 4, (n_src, n_tgt), generator=g)
        mapping = greedy_mapping(counts)
        assert mapping.dtype == torch.long and mapping.shape == (n_tgt,)
        assert len(set(mapping.tolist())) == n_tgt  # distinct sources
        assert ((mapping >= 0) & (mapping < n_src)).all()
        assert mapping.tolist() == reference_greedy(counts.tolist())


def test_greedy_more_targets_than_sources():
    counts = torch.tensor([[1, 0, 4, 0, 0], [0, 3, 0, 0, 2]])  # K′ = 2 < K = 5
    with pytest.raises(HiddenCostError, match="5 classes"):
        greedy_mapping(counts)
    # many-to-one: round 1: 4 at (0,2): t2 <- s0; 3 at (1,1): t1 <- s1; every row used ->
    # rows come back with cols 1, 2 closed: 2 at (1,4): t4 <- s1; row 0 cols 0, 3: [1, 0] ->
    # t0 <- s0; rows back again, only col 3 open, all zero -> first row: t3 <- s0.
    mapping = greedy_mapping(counts, many_to_one=True)
    assert mapping.tolist() == [0, 1, 0, 0, 1]
    assert ((mapping >= 0) & (mapping < 2)).all()


def test_check_class_counts():
    check_class_counts(12, 12)
    check_class_counts(12, 3)
    check_class_counts(2, 5, many_to_one=True)
    with pytest.raises(HiddenCostError):
        check_class_counts(12, 13)


# --------------------------------------------------------------------------------------------
# 4. prediction_counts / frequency_mapping
# --------------------------------------------------------------------------------------------


def test_prediction_counts_by_hand():
    preds = torch.tensor([0, 2, 2, 1, 2, 0])
    labels = torch.tensor([1, 0, 0, 1, 1, 1])
    # pairs (s, t): (0,1) (2,0) (2,0) (1,1) (2,1) (0,1)
    # C[0,1] = 2, C[1,1] = 1, C[2,0] = 2, C[2,1] = 1; source 3 never predicted -> zero row
    counts = prediction_counts(preds, labels, num_source=4, num_target=2)
    assert counts.tolist() == [[0, 2], [0, 1], [2, 1], [0, 0]]
    assert int(counts.sum()) == 6
    # greedy: 2 at (0,1) comes first row-major: t1 <- s0; col 0 among s1..s3: 2 -> t0 <- s2
    assert frequency_mapping(preds, labels, 4, 2).tolist() == [2, 0]
    assert torch.equal(frequency_mapping(preds, labels, 4, 2), greedy_mapping(counts))


def test_frequency_mapping_equals_greedy_of_counts_random():
    g = torch.Generator().manual_seed(8)
    preds = torch.randint(0, K_SRC, (200,), generator=g)
    labels = torch.randint(0, 5, (200,), generator=g)
    counts = prediction_counts(preds, labels, K_SRC, 5)
    for s in range(K_SRC):
        for t in range(5):
            assert counts[s, t] == int(((preds == s) & (labels == t)).sum())
    assert torch.equal(frequency_mapping(preds, labels, K_SRC, 5), greedy_mapping(counts))


# --------------------------------------------------------------------------------------------
# 5. random_mapping, 6. apply_mapping, FM layer
# --------------------------------------------------------------------------------------------


def test_random_mapping_properties():
    state = torch.random.get_rng_state()
    a = random_mapping(1000, 10, seed=3)
    b = random_mapping(1000, 10, seed=3)
    c = random_mapping(1000, 10, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    for m in (a, c, random_mapping(12, 12, seed=0), random_mapping(12, 3, seed=1)):
        assert len(set(m.tolist())) == len(m)
        assert m.min() >= 0
    assert a.max() < 1000 and a.shape == (10,)
    assert sorted(random_mapping(12, 12, seed=0).tolist()) == list(range(12))  # a permutation
    with pytest.raises(HiddenCostError):
        random_mapping(3, 5, seed=0)
    m = random_mapping(3, 5, seed=0, many_to_one=True)
    assert m.shape == (5,) and m.min() >= 0 and m.max() < 3


def test_apply_mapping_selects_columns_in_target_order():
    logits = torch.arange(10.0).view(2, 5)  # [[0..4], [5..9]]
    out = apply_mapping(logits, torch.tensor([3, 0, 4]))
    assert out.tolist() == [[3.0, 0.0, 4.0], [8.0, 5.0, 9.0]]


def test_fully_connected_mapping_is_linear():
    fm = FullyConnectedMapping(K_SRC, 5)
    x = torch.randn(4, K_SRC)
    assert fm(x).shape == (4, 5)
    torch.testing.assert_close(fm(x), x @ fm.linear.weight.T + fm.linear.bias)


# --------------------------------------------------------------------------------------------
# 7. Schedule
# --------------------------------------------------------------------------------------------


def test_milestones():
    assert milestones(100) == [50, 72]  # ⌊50⌋, ⌊72⌋
    assert milestones(200) == [100, 144]  # ⌊100⌋, ⌊144⌋
    assert milestones(10) == [5, 7]  # ⌊5⌋, ⌊7.2⌋
    assert milestones(5) == [2, 3]  # ⌊2.5⌋, ⌊3.6⌋
    assert milestones(3) == [1, 2]  # ⌊1.5⌋, ⌊2.16⌋
    assert milestones(1) == []  # ⌊0.5⌋ = ⌊0.72⌋ = 0 -> dropped
    assert milestones(2) == [1, 1]  # ⌊1⌋, ⌊1.44⌋: kept twice, so MultiStepLR applies γ² at 1
    for e in range(1, 60):
        assert all(1 <= m <= e for m in milestones(e))
        assert all(m in (e * 50 // 100, e * 72 // 100) for m in milestones(e))


@pytest.mark.parametrize(("epochs", "m1", "m2"), [(100, 50, 72), (10, 5, 7)])
def test_adam_multistep_lr_follows_schedule(epochs, m1, m2):
    p = nn.Parameter(torch.zeros(2))
    opt, sched = adam_multistep([p], epochs)
    assert isinstance(opt, torch.optim.Adam)
    seen = []
    for _ in range(epochs):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    for e, lr in enumerate(seen):
        expected = 0.01 if e < m1 else 0.001 if e < m2 else 0.0001
        assert lr == pytest.approx(expected, rel=1e-9), e


def test_epoch_batches():
    batches = epoch_batches(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = epoch_batches(10, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


# --------------------------------------------------------------------------------------------
# ReprogrammedModel / source_predictions / predict_logits
# --------------------------------------------------------------------------------------------


def test_reprogrammed_model_forward_and_predictions():
    backbone = make_backbone()
    prompt = new_prompt()
    with torch.no_grad():
        prompt.delta.normal_(generator=torch.Generator().manual_seed(9))
    model = ReprogrammedModel(backbone, prompt, K_SRC, K_TGT)
    assert model.mapping.tolist() == [0, 1, 2]  # default arange(K) % K′
    model.mapping.copy_(torch.tensor([7, 2, 11]))
    imgs, _ = make_task()
    x = imgs.float() / 255
    with torch.no_grad():
        src = backbone(prompt(x))
    torch.testing.assert_close(model.source_logits(x).detach(), src)
    torch.testing.assert_close(model(x).detach(), src[:, [7, 2, 11]])
    # chunking does not matter
    preds = source_predictions(model, imgs, CPU, batch_size=5)
    assert torch.equal(preds, src.argmax(1))
    assert torch.equal(preds, source_predictions(model, imgs, CPU))
    logits = predict_logits(model, imgs, CPU, batch_size=7)
    assert logits.dtype == torch.float32 and logits.shape == (len(imgs), K_TGT)
    torch.testing.assert_close(logits, src[:, [7, 2, 11]])


# --------------------------------------------------------------------------------------------
# 8. train_visual_prompt
# --------------------------------------------------------------------------------------------


class _ModeRecorder:
    def __init__(self):
        self.modes = []

    def __call__(self, module, args):
        self.modes.append(module.training)


@pytest.mark.parametrize("method", ["ilm", "flm", "rlm", "fm"])
def test_vp_backbone_frozen_and_prompt_trained(method):
    backbone = make_backbone()
    backbone.train()  # train_visual_prompt must put it in eval mode itself
    before = copy.deepcopy(backbone.state_dict())
    rec = _ModeRecorder()
    backbone.bn.register_forward_pre_hook(rec)
    rng = torch.random.get_rng_state()
    model, history = train(method, backbone)
    assert torch.equal(torch.random.get_rng_state(), rng)  # global RNG untouched
    assert model.backbone is backbone
    assert not backbone.training and rec.modes and not any(rec.modes)
    for k, v in backbone.state_dict().items():  # weights *and* BN running stats
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in backbone.parameters())
    delta = model.prompt.delta.detach()
    border = border_mask(CANVAS, INNER).bool()
    assert (delta[border] != 0).any()  # δ was trained ...
    # ... but only on the border: the image region gets zero gradient, so Adam never moves it
    assert torch.equal(delta[:, 4:12, 4:12], torch.zeros(3, INNER, INNER))
    assert len(history.epochs) == EPOCHS and len(history.mappings) == EPOCHS
    assert history.prompts == []  # not asked for
    assert model.fm is None if method != "fm" else model.fm is not None


def test_vp_freezes_an_unfrozen_backbone():
    backbone = make_backbone(frozen=False)
    before = copy.deepcopy(backbone.state_dict())
    train("flm", backbone, epochs=2)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in backbone.parameters())


def test_ilm_recomputes_mapping_every_epoch():
    backbone = make_backbone()
    flm0 = mapping_with_delta(backbone, None)  # epoch-0 mapping: zero prompt (grey border)
    model, history = train("ilm", backbone, save_prompt_history=True)
    assert len(history.mappings) == EPOCHS
    assert history.mappings[0] == flm0
    # epoch e's mapping is FLM on the prompt as it stood after epoch e − 1
    for e in range(1, EPOCHS):
        assert history.mappings[e] == mapping_with_delta(backbone, history.prompts[e - 1]), e
    # this setup is chosen so that the mapping really moves (else the test proves little)
    assert any(m != flm0 for m in history.mappings)
    changes = [r.mapping_changes for r in history.epochs]
    assert changes[0] == K_TGT
    for e in range(1, EPOCHS):
        prev, cur = history.mappings[e - 1], history.mappings[e]
        assert changes[e] == sum(a != b for a, b in zip(prev, cur, strict=True))
    assert model.mapping.tolist() == history.mappings[-1]


def test_flm_mapping_fixed_from_initial_prompt():
    backbone = make_backbone()
    flm0 = mapping_with_delta(backbone, None)
    model, history = train("flm", backbone, save_prompt_history=True)
    assert history.mappings == [flm0] * EPOCHS
    assert [r.mapping_changes for r in history.epochs] == [K_TGT] + [0] * (EPOCHS - 1)
    assert model.mapping.tolist() == flm0
    # the prompt did move the predictions, so a recomputing (ILM-like) FLM would differ
    assert any(mapping_with_delta(backbone, d) != flm0 for d in history.prompts)


def test_rlm_mapping_is_seeded_random():
    _, history = train("rlm", seed=5)
    expected = random_mapping(K_SRC, K_TGT, 5).tolist()
    assert history.mappings == [expected] * EPOCHS
    _, other = train("rlm", seed=6)
    assert other.mappings[0] == random_mapping(K_SRC, K_TGT, 6).tolist() != expected


def test_fm_trains_the_mapping_layer():
    untrained, _ = train("fm", epochs=0)
    model, history = train("fm")
    assert model.fm is not None and untrained.fm is not None
    # same seed -> same initial FM layer; training moved it
    w0, w1 = untrained.fm.linear.weight, model.fm.linear.weight
    assert not torch.equal(w0, w1)
    assert not torch.equal(untrained.fm.linear.bias, model.fm.linear.bias)
    assert history.epochs[-1].loss < history.epochs[0].loss
    imgs, _ = make_task()
    x = imgs.float() / 255
    with torch.no_grad():
        expected = model.fm(model.backbone(model.prompt(x)))
    torch.testing.assert_close(predict_logits(model, imgs, CPU), expected)


@pytest.mark.parametrize("method", ["ilm", "fm"])
def test_vp_deterministic_per_seed(method):
    m1, h1 = train(method, seed=3, save_prompt_history=True)
    m2, h2 = train(method, seed=3, save_prompt_history=True)
    assert torch.equal(m1.prompt.delta, m2.prompt.delta)
    assert strip_seconds(h1) == strip_seconds(h2)
    assert h1.mappings == h2.mappings
    assert all(torch.equal(a, b) for a, b in zip(h1.prompts, h2.prompts, strict=True))
    m3, _ = train(method, seed=4)
    assert not torch.equal(m1.prompt.delta, m3.prompt.delta)  # different shuffle / init


def test_vp_history_records_schedule_and_callback():
    seen = []
    _, history = train("flm", on_epoch=seen.append, lr=0.01)
    assert [r.epoch for r in history.epochs] == list(range(1, EPOCHS + 1))
    assert [r.lr for r in history.epochs] == pytest.approx(LR_BY_EPOCH, rel=1e-9)
    assert seen == history.epochs
    for r in history.epochs:
        assert 0.0 <= r.train_accuracy <= 1.0 and r.loss > 0
        # 24 images in batches of 8: accuracy is a multiple of 1/24
        assert round(r.train_accuracy * 24, 9) == int(round(r.train_accuracy * 24))


def test_vp_save_prompt_history():
    model, history = train("ilm", save_prompt_history=True)
    assert len(history.prompts) == EPOCHS
    assert all(p.shape == (3, CANVAS, CANVAS) for p in history.prompts)
    assert torch.equal(history.prompts[-1], model.prompt.delta.detach())
    # snapshots, not aliases of the live parameter
    assert not torch.equal(history.prompts[0], history.prompts[-1])
    pairs = zip(history.prompts[:-1], history.prompts[1:], strict=True)
    assert all(not torch.equal(a, b) for a, b in pairs)


def test_vp_divergence_raises():
    with pytest.raises(TrainingDivergedError):
        train("flm", NaNNet().eval().requires_grad_(False))
    with pytest.raises(TrainingDivergedError):
        train("fm", NaNNet().eval().requires_grad_(False))
    # an infinite step size turns δ into ±inf/NaN after the first step -> NaN loss next batch
    with pytest.raises(TrainingDivergedError):
        train("flm", lr=float("inf"))


def test_vp_rejects_bad_method_and_class_counts():
    with pytest.raises(HiddenCostError, match="unknown label mapping .xlm."):
        train("xlm")
    imgs, labels = make_task()
    with pytest.raises(HiddenCostError):
        train_visual_prompt(
            make_backbone(), new_prompt(), imgs, labels, num_classes=13, num_source=K_SRC,
            method="ilm", epochs=1, batch_size=8, seed=0, device=CPU,
        )


# --------------------------------------------------------------------------------------------
# 9. Linear probing
# --------------------------------------------------------------------------------------------

LP_MEAN, LP_STD = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)


def test_resize_normalize():
    pre = ResizeNormalize(CANVAS, LP_MEAN, LP_STD)
    m = torch.tensor(LP_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(LP_STD).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(10))
    out = pre(x)
    assert out.shape == (2, 3, CANVAS, CANVAS)
    assert out.is_contiguous(memory_format=torch.channels_last)
    ref = F.interpolate(x, size=(CANVAS, CANVAS), mode="bilinear", antialias=True,
                        align_corners=False)
    torch.testing.assert_close(out, (ref - m) / s, rtol=0, atol=1e-6)
    same = torch.rand(2, 3, CANVAS, CANVAS)
    torch.testing.assert_close(pre(same), (same - m) / s, rtol=0, atol=1e-6)  # no resize
    # a constant 0.5 image -> ((0.5 − 0.1)/0.5, (0.5 − 0.2)/0.25, (0.5 − 0.3)/2) = (0.8, 1.2, 0.1)
    const = pre(torch.full((1, 3, 5, 7), 0.5))
    torch.testing.assert_close(const[0, :, 3, 3], torch.tensor([0.8, 1.2, 0.1]), atol=1e-6,
                               rtol=0)


def test_extract_features_matches_manual():
    backbone = make_backbone()
    pre = ResizeNormalize(CANVAS, LP_MEAN, LP_STD)
    imgs, _ = make_task()
    feats = extract_features(backbone, pre, imgs, CPU, batch_size=5)
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert feats.shape == (len(imgs), 6 * 4)  # width 6 × 2×2 pooled cells
    with torch.no_grad():
        z = backbone.forward_features(pre(imgs.float() / 255))
        manual = backbone.pool(z).flatten(1)
    torch.testing.assert_close(feats, manual)
    # deterministic and independent of chunking
    assert torch.equal(feats, extract_features(backbone, pre, imgs, CPU, batch_size=5))
    torch.testing.assert_close(feats, extract_features(backbone, pre, imgs, CPU))


def test_extract_features_uses_eval_mode():
    backbone = make_backbone()
    pre = ResizeNormalize(CANVAS, LP_MEAN, LP_STD)
    imgs, _ = make_task()
    expected = extract_features(backbone, pre, imgs, CPU)  # backbone in eval mode
    before = copy.deepcopy(backbone.state_dict())
    backbone.train()
    feats = extract_features(backbone, pre, imgs, CPU)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    torch.testing.assert_close(feats, expected)


def separable_features(n_per_class: int = 20, dim: int = 8, seed: int = 0):
    """Three Gaussian clusters at ±4 on different axes, unit noise: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(K_TGT, dim)
    centres[0, 0], centres[1, 1], centres[2, 0] = 4.0, 4.0, -4.0
    labels = torch.arange(K_TGT).repeat_interleave(n_per_class)
    feats = centres[labels] + 0.5 * torch.randn(len(labels), dim, generator=g)
    return feats, labels


def test_train_linear_head_learns_and_is_deterministic():
    feats, labels = separable_features()
    rng = torch.random.get_rng_state()
    head, history = train_linear_head(feats, labels, K_TGT, epochs=20, batch_size=16, seed=1,
                                      device=CPU)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert isinstance(head, nn.Linear) and head.weight.shape == (K_TGT, 8)
    assert history.epochs[-1].loss < history.epochs[0].loss
    assert history.epochs[-1].train_accuracy >= 0.95
    with torch.no_grad():
        assert (head(feats).argmax(1) == labels).float().mean() >= 0.95
    # lr: milestones ⌊10⌋, ⌊14.4⌋ = 10, 14
    assert [r.lr for r in history.epochs] == pytest.approx(
        [0.01] * 10 + [0.001] * 4 + [0.0001] * 6, rel=1e-9
    )
    head2, history2 = train_linear_head(feats, labels, K_TGT, epochs=20, batch_size=16, seed=1,
                                        device=CPU)
    assert torch.equal(head.weight, head2.weight) and torch.equal(head.bias, head2.bias)
    assert strip_seconds(history) == strip_seconds(history2)
    head3, _ = train_linear_head(feats, labels, K_TGT, epochs=20, batch_size=16, seed=2,
                                 device=CPU)
    assert not torch.equal(head.weight, head3.weight)


def test_cached_features_equal_recomputed_features():
    backbone = make_backbone()
    pre = ResizeNormalize(CANVAS, LP_MEAN, LP_STD)
    imgs, labels = make_task()
    epochs, bs, seed = 4, 8, 3
    cached = extract_features(backbone, pre, imgs, CPU)
    head, _ = train_linear_head(cached, labels, K_TGT, epochs, bs, seed, CPU)

    # Reference: the naive loop that runs every batch through the frozen backbone each epoch.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = nn.Linear(cached.shape[1], K_TGT)
    opt, sched = adam_multistep(ref.parameters(), epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in epoch_batches(len(labels), bs, gen):
            with torch.no_grad():
                x = pre(imgs[idx].float() / 255)
                f = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
            loss = F.cross_entropy(ref(f), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    torch.testing.assert_close(head.weight, ref.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.bias, ref.bias, rtol=1e-5, atol=1e-6)


def test_train_linear_head_divergence_raises():
    feats, labels = separable_features()
    feats[3, 0] = float("nan")
    with pytest.raises(TrainingDivergedError):
        train_linear_head(feats, labels, K_TGT, epochs=2, batch_size=64, seed=0, device=CPU)


# --------------------------------------------------------------------------------------------
# 10. ILM-VP reference options: mapping_num, mapping_interval, prompt_init
# --------------------------------------------------------------------------------------------


def reference_multi_label_mapping(dist_matrix: torch.Tensor, mlm_num: int) -> list[list[int]]:
    """ILM-VP's ``predictive_distribution_based_multi_label_mapping`` + the ordering of
    ``generate_label_mapping_by_frequency``, ported as is (stable sort for determinism); the
    K·m mapping sequence is reshaped to (K, m)."""
    dist_matrix = dist_matrix.clone()
    assert mlm_num * dist_matrix.size(1) <= dist_matrix.size(0)
    mapping_matrix = torch.zeros_like(dist_matrix, dtype=int)
    dist_matrix_flat = dist_matrix.flatten()
    for _ in range(mlm_num * dist_matrix.size(1)):
        loc = dist_matrix_flat.argmax().item()
        loc = [loc // dist_matrix.size(1), loc % dist_matrix.size(1)]
        mapping_matrix[loc[0], loc[1]] = 1
        dist_matrix[loc[0]] = -1
        if mapping_matrix[:, loc[1]].sum() == mlm_num:
            dist_matrix[:, loc[1]] = -1
        dist_matrix_flat = dist_matrix.flatten()
    pairs = torch.nonzero(mapping_matrix)
    seq = pairs[:, 0][torch.sort(pairs[:, 1], stable=True).indices]
    return seq.view(dist_matrix.size(1), mlm_num).tolist()


def test_greedy_two_sources_per_target_by_hand():
    #       t0 t1
    # s0  [ 5, 4]    6 at (2,1): t1 <- s2, drop row 2 (t1 has 1 of 2).
    # s1  [ 4, 0]    5 at (0,0): t0 <- s0, drop row 0.
    # s2  [ 3, 6]    4 at (1,0): t0 <- s1, drop row 1; t0 full -> drop column 0.
    # s3  [ 0, 2]    column 1 among s3, s4: 2 at (3,1): t1 <- s3; t1 full.
    # s4  [ 1, 1]    -> t0 {0, 1}, t1 {2, 3}
    counts = [[5, 4], [4, 0], [3, 6], [0, 2], [1, 1]]
    mapping = greedy_mapping(torch.tensor(counts), mapping_num=2)
    assert mapping.dtype == torch.long and mapping.shape == (2, 2)
    assert mapping.tolist() == [[0, 1], [2, 3]]
    assert greedy(counts) == [0, 2]  # m = 1 on the same counts: 6 -> t1 <- s2, 5 -> t0 <- s0
    #       t0 t1
    # s0  [ 9, 1]    9 at (0,0): t0 <- s0; 8 at (1,0): t0 <- s1, t0 full -> column 0 closed.
    # s1  [ 8, 2]    t1's 2 sat in row s1, now used; column 1 among s2, s3 is all zeros ->
    # s2  [ 7, 0]    first row-major zero (2,1): t1 <- s2, then (3,1): t1 <- s3.
    # s3  [ 0, 0]    Rows are listed ascending whatever the pick order.
    assert greedy([[9, 1], [8, 2], [7, 0], [0, 0]], mapping_num=2) == [[0, 1], [2, 3]]
    #       t0 t1 t2, m = 2: 7 at (3,2): t2 <- s3; 6 at (0,2): t2 <- s0, t2 full;
    # s0  [ 0, 5, 6]  5 at (4,0): t0 <- s4 (row-major before (0,1), which left with row 0);
    # s1  [ 2, 0, 1]  row 1 [2, 0, ·], row 2 [0, 3, ·], row 5 [1, 1, ·]: 3 at (2,1): t1 <- s2;
    # s2  [ 0, 3, 0]  2 at (1,0): t0 <- s1, t0 full; t1 from row 5: t1 <- s5.
    # s3  [ 0, 0, 7]  -> t0 {1, 4}, t1 {2, 5}, t2 {0, 3}
    # s4  [ 5, 0, 0]
    # s5  [ 1, 1, 0]
    counts3 = [[0, 5, 6], [2, 0, 1], [0, 3, 0], [0, 0, 7], [5, 0, 0], [1, 1, 0]]
    assert greedy(counts3, mapping_num=2) == [[1, 4], [2, 5], [0, 3]]
    assert reference_multi_label_mapping(torch.tensor(counts3), 2) == [[1, 4], [2, 5], [0, 3]]


def test_greedy_multi_matches_reference_port():
    g = torch.Generator().manual_seed(11)
    for trial in range(40):
        m = 2 + trial % 3
        n_tgt = 1 + trial % 4
        n_src = n_tgt * m + trial % 3
        counts = torch.randint(0, 4, (n_src, n_tgt), generator=g)  # small ints: many ties
        mapping = greedy_mapping(counts, mapping_num=m)
        assert mapping.shape == (n_tgt, m)
        assert len(set(mapping.flatten().tolist())) == n_tgt * m  # K·m distinct sources
        assert mapping.tolist() == reference_multi_label_mapping(counts, m), trial
    # m = 1 through the same port gives the existing one-to-one greedy
    counts = torch.randint(0, 4, (9, 4), generator=g)
    assert [r[0] for r in reference_multi_label_mapping(counts, 1)] == greedy_mapping(
        counts).tolist()


def test_mapping_num_checks():
    check_class_counts(12, 3, mapping_num=4)  # 3·4 = 12 sources: just enough
    with pytest.raises(HiddenCostError, match="15"):
        check_class_counts(12, 3, mapping_num=5)  # 3·5 = 15 > 12
    with pytest.raises(HiddenCostError):
        check_class_counts(12, 3, many_to_one=True, mapping_num=5)  # no reuse for m > 1
    with pytest.raises(HiddenCostError):
        check_class_counts(12, 3, mapping_num=0)
    with pytest.raises(HiddenCostError):
        greedy_mapping(torch.zeros(5, 3, dtype=torch.long), mapping_num=2)  # 6 > 5
    with pytest.raises(HiddenCostError):
        random_mapping(5, 3, seed=0, mapping_num=2)


def test_frequency_mapping_two_sources_by_hand():
    preds = torch.tensor([0, 0, 1, 3, 3, 3, 2, 4])
    labels = torch.tensor([0, 0, 0, 1, 1, 0, 1, 1])
    # C (5×2): s0 [2, 0], s1 [1, 0], s2 [0, 1], s3 [1, 2], s4 [0, 1]
    # 2 at (0,0): t0 <- s0; 2 at (3,1): t1 <- s3; rows 1, 2, 4 left: 1 at (1,0): t0 <- s1
    # (t0 full); column 1: 1 at (2,1): t1 <- s2.  -> t0 {0, 1}, t1 {2, 3}
    assert prediction_counts(preds, labels, 5, 2).tolist() == [[2, 0], [1, 0], [0, 1], [1, 2],
                                                               [0, 1]]
    assert frequency_mapping(preds, labels, 5, 2, mapping_num=2).tolist() == [[0, 1], [2, 3]]
    assert frequency_mapping(preds, labels, 5, 2).tolist() == [0, 3]  # m = 1 unchanged


def test_random_mapping_multi():
    state = torch.random.get_rng_state()
    m = random_mapping(K_SRC, K_TGT, seed=5, mapping_num=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    # the first K·m = 6 entries of the seeded permutation, rows of 2, each row ascending
    perm = torch.randperm(K_SRC, generator=torch.Generator().manual_seed(5))[:6].view(3, 2)
    assert m.tolist() == [sorted(row) for row in perm.tolist()]
    assert len(set(m.flatten().tolist())) == 6
    assert torch.equal(m, random_mapping(K_SRC, K_TGT, seed=5, mapping_num=2))
    assert not torch.equal(m, random_mapping(K_SRC, K_TGT, seed=6, mapping_num=2))
    # m = 1 is the old draw
    assert random_mapping(K_SRC, K_TGT, seed=5).tolist() == perm.flatten()[:3].tolist()


def test_apply_mapping_averages_multiple_sources():
    logits = torch.arange(10.0).view(2, 5)  # [[0..4], [5..9]]
    # t0 <- {0, 3}: (0 + 3)/2 = 1.5, (5 + 8)/2 = 6.5; t1 <- {1, 4}: 2.5, 7.5; t2 <- {2, 2}: 2, 7
    out = apply_mapping(logits, torch.tensor([[0, 3], [1, 4], [2, 2]]))
    assert out.dtype == torch.float32
    assert out.tolist() == [[1.5, 2.5, 2.0], [6.5, 7.5, 7.0]]
    # half-precision logits are averaged in float32
    half = apply_mapping(logits.to(torch.bfloat16), torch.tensor([[0, 3], [1, 4]]))
    assert half.dtype == torch.float32 and half.tolist() == [[1.5, 2.5], [6.5, 7.5]]
    # a length-K mapping is still a plain column selection (dtype kept)
    assert apply_mapping(logits.half(), torch.tensor([4, 0])).dtype == torch.float16


def test_ilm_two_sources_per_target_trains_on_mean_logits():
    backbone = make_backbone()
    model, history = train("ilm", backbone, epochs=3, mapping_num=2, lr=0.5,
                           save_prompt_history=True)
    assert model.mapping.shape == (K_TGT, 2)
    assert history.mappings[0] == mapping_with_delta(backbone, None, 2)
    for e in (1, 2):
        assert history.mappings[e] == mapping_with_delta(backbone, history.prompts[e - 1],
                                                               2), e
    for mapping in history.mappings:
        assert all(isinstance(row, list) and len(row) == 2 and row == sorted(row)
                   for row in mapping)
        assert len({s for row in mapping for s in row}) == 2 * K_TGT
    assert model.mapping.tolist() == history.mappings[-1]
    changes = [r.mapping_changes for r in history.epochs]
    assert changes[0] == K_TGT
    for e in (1, 2):  # targets whose source set changed
        prev, cur = history.mappings[e - 1], history.mappings[e]
        assert changes[e] == sum(a != b for a, b in zip(prev, cur, strict=True))
    imgs, _ = make_task()
    with torch.no_grad():
        src = backbone(model.prompt(imgs.float() / 255))
    idx = model.mapping
    torch.testing.assert_close(predict_logits(model, imgs, CPU),
                               (src[:, idx[:, 0]] + src[:, idx[:, 1]]) / 2)


def test_flm_and_rlm_two_sources_per_target():
    backbone = make_backbone()
    _, history = train("flm", backbone, epochs=2, mapping_num=2)
    assert history.mappings == [mapping_with_delta(backbone, None, 2)] * 2
    _, history = train("rlm", seed=5, epochs=2, mapping_num=2)
    assert history.mappings == [random_mapping(K_SRC, K_TGT, 5, mapping_num=2).tolist()] * 2


def test_vp_rejects_bad_mapping_options():
    with pytest.raises(HiddenCostError, match="fm"):
        train("fm", epochs=1, mapping_num=2)
    with pytest.raises(HiddenCostError):
        train("ilm", epochs=1, mapping_num=5)  # 3·5 = 15 > K′ = 12
    for bad in (0, -1, 1.5, True):
        with pytest.raises(HiddenCostError):
            train("ilm", epochs=1, mapping_interval=bad)
        with pytest.raises(HiddenCostError):
            train("flm", epochs=1, mapping_num=bad)


def test_ilm_mapping_interval_two():
    # backbone 1, lr 0.5: the prompt after epoch 0 already moves the frequency mapping, so
    # holding it through epoch 1 is observable.
    backbone = make_backbone()
    flm0 = mapping_with_delta(backbone, None)
    model, history = train("ilm", backbone, epochs=3, mapping_interval=2, lr=0.5,
                           save_prompt_history=True)
    assert [r.mapping_recomputed for r in history.epochs] == [True, False, True]
    assert history.mappings[0] == history.mappings[1] == flm0  # held at epoch 1 ...
    moved = mapping_with_delta(backbone, history.prompts[0])
    assert moved != flm0  # ... although recomputing would have changed it
    # epoch 2 recomputes with the prompt after epoch 1
    assert history.mappings[2] == mapping_with_delta(backbone, history.prompts[1]) != flm0
    changes = [r.mapping_changes for r in history.epochs]
    assert changes == [K_TGT, 0, sum(a != b for a, b in zip(flm0, history.mappings[2],
                                                              strict=True))]
    assert model.mapping.tolist() == history.mappings[-1]
    # interval 1 (the default) recomputes at epoch 1 and picks the moved mapping
    _, every = train("ilm", backbone, epochs=3, lr=0.5)
    assert [r.mapping_recomputed for r in every.epochs] == [True] * 3
    assert every.mappings[1] == moved


def test_ilm_interval_beyond_epochs_is_flm():
    # k ≥ E: only epoch 0 computes the mapping, exactly like FLM
    backbone = make_backbone()
    m_ilm, h_ilm = train("ilm", backbone, epochs=3, mapping_interval=3, lr=0.5)
    m_flm, h_flm = train("flm", backbone, epochs=3, lr=0.5)
    assert torch.equal(m_ilm.prompt.delta, m_flm.prompt.delta)
    assert strip_seconds(h_ilm) == strip_seconds(h_flm) and h_ilm.mappings == h_flm.mappings


@pytest.mark.parametrize("method", ["flm", "rlm", "fm"])
def test_mapping_interval_ignored_outside_ilm(method):
    m1, h1 = train(method, epochs=3, lr=0.5)
    m2, h2 = train(method, epochs=3, lr=0.5, mapping_interval=2)
    assert torch.equal(m1.prompt.delta, m2.prompt.delta)
    assert strip_seconds(h1) == strip_seconds(h2) and h1.mappings == h2.mappings
    expected = [method == "flm", False, False]
    assert [r.mapping_recomputed for r in h1.epochs] == expected


def test_vp_history_keys_default():
    _, history = train("ilm", epochs=2)
    assert list(history.epochs[0].model_dump()) == ["epoch", "loss", "train_accuracy", "lr",
                                       "mapping_changes", "mapping_recomputed", "seconds"]
    assert [r.mapping_recomputed for r in history.epochs] == [True, True]


def test_pad_prompt_randn_init_seeded():
    state = torch.random.get_rng_state()
    a = PadPrompt(CANVAS, INNER, MEAN, STD, init="randn", seed=3)
    b = PadPrompt(CANVAS, INNER, MEAN, STD, init="randn", seed=3)
    c = PadPrompt(CANVAS, INNER, MEAN, STD, init="randn", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    expected = torch.randn(3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.delta.detach(), expected)
    assert torch.equal(a.delta, b.delta) and not torch.equal(a.delta, c.delta)
    assert a.delta.requires_grad
    # the border shows sigmoid(δ), the image region stays untouched
    x = torch.rand(1, 3, INNER, INNER, generator=torch.Generator().manual_seed(0))
    out = a.prompted_image(x)
    assert torch.equal(out[:, :, 4:12, 4:12], x)
    border = border_mask(CANVAS, INNER).bool()
    torch.testing.assert_close(out[0][border], torch.sigmoid(expected)[border])
    # zero (the default) draws nothing and is exactly zero, whatever the seed
    zero = PadPrompt(CANVAS, INNER, MEAN, STD, init="zero", seed=3)
    assert torch.equal(zero.delta, torch.zeros(3, CANVAS, CANVAS))
    assert torch.equal(zero.delta, new_prompt().delta)
    with pytest.raises(HiddenCostError, match="unknown prompt init"):
        PadPrompt(CANVAS, INNER, MEAN, STD, init="uniform")


def train_from_prompt(prompt: PadPrompt, method: str = "ilm", seed: int = 0, epochs: int = 2):
    imgs, labels = make_task()
    return train_visual_prompt(make_backbone(), prompt, imgs, labels, num_classes=K_TGT,
                               num_source=K_SRC, method=method, epochs=epochs, batch_size=8,
                               seed=seed, device=CPU, lr=0.2)


def test_vp_randn_init_reproducible():
    def randn(seed: int) -> PadPrompt:
        return PadPrompt(CANVAS, INNER, MEAN, STD, init="randn", seed=seed)

    m1, h1 = train_from_prompt(randn(3), seed=3)
    m2, h2 = train_from_prompt(randn(3), seed=3)
    assert torch.equal(m1.prompt.delta, m2.prompt.delta)
    assert strip_seconds(h1) == strip_seconds(h2) and h1.mappings == h2.mappings
    m3, _ = train_from_prompt(randn(4), seed=3)  # other init, same shuffle
    assert not torch.equal(m1.prompt.delta, m3.prompt.delta)
    m0, _ = train_from_prompt(new_prompt(), seed=3)
    assert not torch.equal(m1.prompt.delta, m0.prompt.delta)
    # the image region gets no gradient: it keeps its random initial values
    init = randn(3).delta.detach()
    assert torch.equal(m1.prompt.delta[:, 4:12, 4:12], init[:, 4:12, 4:12])


def _vp_job(settings, backbone=None):
    from hiddencost.data import TaskData
    from hiddencost.prompting.methods import TransferJob

    imgs, labels = make_task()
    test_imgs, test_labels = make_task(n_per_class=3, seed=1)
    task = TaskData("toy", ["a", "b", "c"], imgs, labels, test_imgs, test_labels, INNER, INNER,
                    "synthetic")
    return TransferJob(backbone if backbone is not None else make_backbone(), K_SRC, MEAN, STD,
                       task, torch.arange(len(labels)), settings, CPU)


def _settings(**kw):
    from hiddencost.prompting.methods import TransferSettings, VPOptions

    base = dict(epochs=2, lr=0.2, batch_size=8, seed=0, canvas_size=CANVAS, inner_size=INNER,
                lp_image_size=CANVAS)
    options = {k: kw.pop(k) for k in list(kw) if k in VPOptions.model_fields}
    return TransferSettings(**{**base, **kw}, options=VPOptions(**options))


def test_visual_prompting_default_options_unchanged():
    from hiddencost.prompting.methods import METHODS

    s = _settings()
    o = s.options
    assert (o.mapping_interval, o.mapping_num, o.prompt_init) == (1, 1, "zero")
    method = METHODS.get("ilm")
    assert torch.equal(method.input_transform(s, MEAN, STD).delta, new_prompt().delta)
    outcome = method.fit(_vp_job(s))
    model, history = train("ilm", epochs=2)  # the direct call with the old signature
    assert torch.equal(outcome.tensors["prompt.delta"], model.prompt.delta.detach())
    assert strip_seconds(outcome.history) == strip_seconds(history)
    assert outcome.mapping == model.mapping.tolist()
    assert all(isinstance(s, int) for s in outcome.mapping)
    assert outcome.mapping_history == history.mappings
    test_imgs, _ = make_task(n_per_class=3, seed=1)
    assert torch.equal(outcome.logits, predict_logits(model, test_imgs, CPU))


def test_visual_prompting_passes_new_options():
    from hiddencost.prompting.methods import METHODS

    s = _settings(mapping_num=2, mapping_interval=2, prompt_init="randn", seed=3, epochs=3)
    prompt = METHODS.get("ilm").input_transform(s, MEAN, STD)
    init = torch.randn(3, CANVAS, CANVAS, generator=torch.Generator().manual_seed(3))
    assert torch.equal(prompt.delta.detach(), init)
    outcome = METHODS.get("ilm").fit(_vp_job(s))
    assert [r.mapping_recomputed for r in outcome.history.epochs] == [True, False, True]
    assert len(outcome.mapping) == K_TGT
    assert all(isinstance(row, list) and len(row) == 2 for row in outcome.mapping)
    assert outcome.mapping_history is not None and len(outcome.mapping_history) == 3
    assert outcome.mapping_history[-1] == outcome.mapping
    # the image region of δ never moves: still the seeded randn values
    delta = outcome.tensors["prompt.delta"]
    assert torch.equal(delta[:, 4:12, 4:12], init[:, 4:12, 4:12])
    with pytest.raises(HiddenCostError):
        METHODS.get("fm").fit(_vp_job(_settings(mapping_num=2)))

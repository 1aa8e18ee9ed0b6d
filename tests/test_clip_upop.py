"""UPop checkpoints of the tiny CLIP: a file written here exactly as UPop's ``compress`` leaves
a structurally pruned CLIP (both towers, per-block widths, momentum copies, queues, search
masks) loads into narrowed towers whose embeddings equal an independent hand-written forward of
the unpruned weights restricted to the kept rows / columns; the report counts what was kept and
dropped; ill-fitting files are refused naming the key; NarrowAttention at full width is
``nn.MultiheadAttention``."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from clip_tiny import TINY_CONFIG, tiny_clip_entry
from torch import nn

from hiddencost.backbones import create_model
from hiddencost.clip.narrow import NarrowAttention
from hiddencost.errors import HiddenCostError

VIS, TXT = "visual.transformer.resblocks", "transformer.resblocks"
HEADS = {VIS: TINY_CONFIG["vision_cfg"]["width"] // TINY_CONFIG["vision_cfg"]["head_width"],
         TXT: TINY_CONFIG["text_cfg"]["heads"]}
#: Per block: (kept dims per head or None = all, kept MLP hidden units or None = all).
PLAN = {
    f"{VIS}.0": (20, 96),    # head_dim 32 -> 20, MLP 256 -> 96
    f"{VIS}.1": (8, None),   # head_dim 32 -> 8 only
    f"{TXT}.0": (12, 40),    # head_dim 16 -> 12, MLP 128 -> 40
    f"{TXT}.1": (None, None),  # untouched
}
NARROWED = 3
TEXTS = ["a photo of a cat", "a diagram", "two dogs playing in the snow, at night"]
MOMENTUM_TOP = {"visual": "visual_m", "transformer": "transformer_m",
                "token_embedding": "token_embedding_m", "ln_final": "ln_final_m",
                "text_projection": "text_projection_m",
                "positional_embedding": "positional_embedding_m"}


def _numel(state: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() for v in state.values())


def _mask(size: int, kept: int | None, gen: torch.Generator) -> torch.Tensor:
    """A UPop search mask: 1.0 at ``kept`` random positions (all when None), else 0.0."""
    alpha = torch.zeros(size)
    alpha[torch.randperm(size, generator=gen)[:size if kept is None else kept]] = 1.0
    return alpha


def _prune(dense: dict[str, torch.Tensor], masks: dict[str, tuple[torch.Tensor, torch.Tensor]]
           ) -> dict[str, torch.Tensor]:
    """UPop's compress: the rows / columns the masks keep (``alpha.repeat`` selections)."""
    out = {k: v.clone() for k, v in dense.items()}
    for prefix, (attn_alpha, mlp_alpha) in masks.items():
        heads = HEADS[prefix.rsplit(".", 1)[0]]
        rows = attn_alpha.repeat(3 * heads) == 1
        cols = attn_alpha.repeat(heads) == 1
        keep = mlp_alpha == 1
        for name in ("attn.in_proj_weight", "attn.in_proj_bias"):
            out[f"{prefix}.{name}"] = dense[f"{prefix}.{name}"][rows].clone()
        out[f"{prefix}.attn.out_proj.weight"] = dense[f"{prefix}.attn.out_proj.weight"][:, cols]
        out[f"{prefix}.mlp.c_fc.weight"] = dense[f"{prefix}.mlp.c_fc.weight"][keep].clone()
        out[f"{prefix}.mlp.c_fc.bias"] = dense[f"{prefix}.mlp.c_fc.bias"][keep].clone()
        out[f"{prefix}.mlp.c_proj.weight"] = dense[f"{prefix}.mlp.c_proj.weight"][:, keep]
    return {k: v.contiguous() for k, v in out.items()}


# ---- an independent forward of the CLIP towers (float64, from the dense weights) ----------

def _ln(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def _attention(x: torch.Tensor, sd: dict, prefix: str, heads: int, dims: torch.Tensor,
               mask: torch.Tensor | None, scale_dim: int | None = None) -> torch.Tensor:
    """Σ_heads softmax(q kᵀ/√d′ + mask) v W_o[:, head], each head restricted to ``dims``."""
    width = x.shape[-1]
    head_dim = width // heads
    w, b = sd[f"{prefix}.attn.in_proj_weight"], sd[f"{prefix}.attn.in_proj_bias"]
    w_o = sd[f"{prefix}.attn.out_proj.weight"]
    out = torch.zeros_like(x) + sd[f"{prefix}.attn.out_proj.bias"]
    for h in range(heads):
        idx = h * head_dim + dims
        q = x @ w[idx].T + b[idx]
        k = x @ w[width + idx].T + b[width + idx]
        v = x @ w[2 * width + idx].T + b[2 * width + idx]
        scores = q @ k.transpose(-1, -2) / math.sqrt(scale_dim or len(dims))
        if mask is not None:
            scores = scores + mask
        out = out + (scores.softmax(-1) @ v) @ w_o[:, idx].T
    return out


def _mlp(x: torch.Tensor, sd: dict, prefix: str, units: torch.Tensor) -> torch.Tensor:
    h = x @ sd[f"{prefix}.mlp.c_fc.weight"][units].T + sd[f"{prefix}.mlp.c_fc.bias"][units]
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return h @ sd[f"{prefix}.mlp.c_proj.weight"][:, units].T + sd[f"{prefix}.mlp.c_proj.bias"]


def _blocks(x, sd, tower, kept, mask, scale_full=False):
    for i in range(2):
        prefix = f"{tower}.{i}"
        dims, units = kept[prefix]
        full_dim = x.shape[-1] // HEADS[tower] if scale_full else None
        x = x + _attention(_ln(x, sd, f"{prefix}.ln_1"), sd, prefix, HEADS[tower], dims, mask,
                           full_dim)
        x = x + _mlp(_ln(x, sd, f"{prefix}.ln_2"), sd, prefix, units)
    return x


def ref_image(images: torch.Tensor, sd: dict, kept: dict, scale_full: bool = False):
    n, patch = images.shape[0], TINY_CONFIG["vision_cfg"]["patch_size"]
    grid = images.shape[-1] // patch
    patches = (images.double().view(n, 3, grid, patch, grid, patch).permute(0, 2, 4, 1, 3, 5)
               .reshape(n, grid * grid, 3 * patch * patch))
    w = sd["visual.conv1.weight"]
    x = patches @ w.reshape(w.shape[0], -1).T
    x = torch.cat([sd["visual.class_embedding"].expand(n, 1, -1), x], dim=1)
    x = _ln(x + sd["visual.positional_embedding"], sd, "visual.ln_pre")
    x = _blocks(x, sd, VIS, kept, None, scale_full)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def ref_text(tokens: torch.Tensor, sd: dict, kept: dict, scale_full: bool = False):
    length = tokens.shape[1]
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf"), dtype=torch.float64).triu(1)
    x = _ln(_blocks(x, sd, TXT, kept, causal, scale_full), sd, "ln_final")
    eot = x[torch.arange(x.shape[0]), tokens.argmax(-1)]
    return eot @ sd["text_projection"]


# ---- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upop(tmp_path_factory):
    """The dense (perturbed) tiny model, its state, the masks and a UPop file of it."""
    entry = tiny_clip_entry()
    gen = torch.Generator().manual_seed(1234)
    towers, _ = create_model(entry.name, weights="random")
    with torch.no_grad():
        for p in towers.clip.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    dense = {k: v.detach().clone() for k, v in towers.clip.state_dict().items()}
    masks = {}
    for prefix, (dims, units) in PLAN.items():
        heads = HEADS[prefix.rsplit(".", 1)[0]]
        width = dense[f"{prefix}.ln_1.weight"].shape[0]
        masks[prefix] = (_mask(width // heads, dims, gen),
                         _mask(dense[f"{prefix}.mlp.c_fc.weight"].shape[0], units, gen))
    pruned = _prune(dense, masks)
    momentum = {}
    for key, value in pruned.items():
        top, _, rest = key.partition(".")
        if top in MOMENTUM_TOP:
            momentum[MOMENTUM_TOP[top] + (f".{rest}" if rest else "")] = value.clone()
    queues = {"image_queue": torch.randn(32, 57, generator=gen),
              "text_queue": torch.randn(32, 57, generator=gen),
              "idx_queue": torch.full((1, 57), -100, dtype=torch.long),
              "ptr_queue": torch.zeros(1, dtype=torch.long)}
    alphas = {}
    for prefix, (attn_alpha, mlp_alpha) in masks.items():
        alphas[f"{prefix}.alpha"] = mlp_alpha.clone()
        alphas[f"{prefix}.attn.alpha"] = attn_alpha.clone()
    path = tmp_path_factory.mktemp("upop") / "upop_tiny.pth"
    torch.save({"model": {**pruned, **momentum, **queues, **alphas}, "epoch": 4}, path)
    kept = {p: (torch.nonzero(a).flatten(), torch.nonzero(m).flatten())
            for p, (a, m) in masks.items()}
    return {"entry": entry, "towers": towers, "dense": dense, "pruned": pruned, "kept": kept,
            "momentum": momentum, "extra": {**momentum, **queues, **alphas}, "path": path,
            "sd64": {k: v.double() for k, v in dense.items()}}


@pytest.fixture(scope="module")
def loaded(upop):
    return create_model(upop["entry"].name, checkpoint=upop["path"])


def _images(seed: int = 7, n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# ---- tests -------------------------------------------------------------------------------

def test_plan_keys_exist_and_momentum_covers_both_towers(upop):
    """The file is what the tests claim: every planned width is in it, both towers' momentum
    copies (and those of the text-side tensors) are present."""
    pruned = upop["pruned"]
    assert pruned[f"{VIS}.0.attn.in_proj_weight"].shape == (3 * 2 * 20, 64)
    assert pruned[f"{VIS}.0.attn.out_proj.weight"].shape == (64, 2 * 20)
    assert pruned[f"{VIS}.0.mlp.c_fc.weight"].shape == (96, 64)
    assert pruned[f"{VIS}.0.mlp.c_proj.weight"].shape == (64, 96)
    assert pruned[f"{VIS}.1.attn.in_proj_weight"].shape == (3 * 2 * 8, 64)
    assert pruned[f"{VIS}.1.mlp.c_fc.weight"].shape == (256, 64)
    assert pruned[f"{TXT}.0.attn.in_proj_bias"].shape == (3 * 2 * 12,)
    assert pruned[f"{TXT}.0.mlp.c_proj.weight"].shape == (32, 40)
    assert pruned[f"{TXT}.1.attn.in_proj_weight"].shape == (96, 32)
    momentum = upop["momentum"]
    for key in ("visual_m.conv1.weight", "visual_m.transformer.resblocks.0.mlp.c_fc.weight",
                "transformer_m.resblocks.1.ln_2.bias", "token_embedding_m.weight",
                "ln_final_m.weight", "text_projection_m", "positional_embedding_m"):
        assert key in momentum


def test_pruned_towers_match_an_independent_forward(upop, loaded):
    model, _ = loaded
    sd, kept = upop["sd64"], upop["kept"]
    images = _images()
    tokens = open_clip.tokenize(TEXTS)
    with torch.no_grad():
        image = model(images)
        text = model.clip.encode_text(tokens)
    want_image, want_text = ref_image(images, sd, kept), ref_text(tokens, sd, kept)
    assert image.shape == (3, 32) and text.shape == (3, 32)
    torch.testing.assert_close(image.double(), want_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text.double(), want_text, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_texts(TEXTS).double(),
                               F.normalize(want_text, dim=-1), atol=1e-5, rtol=1e-5)
    # the comparison has teeth: the dense model, and the pruned one with the full head dim's
    # scale 1/√(D/h) instead of 1/√d′, are both far from it
    with torch.no_grad():
        dense_image = upop["towers"](images).double()
    assert (dense_image - want_image).abs().max() > 1e-2
    for got, wrong in ((want_image, ref_image(images, sd, kept, scale_full=True)),
                       (want_text, ref_text(tokens, sd, kept, scale_full=True))):
        assert (got - wrong).abs().max() > 1e-3


def test_pruned_towers_have_the_file_widths(loaded):
    model, _ = loaded
    vis, txt = model.clip.visual.transformer.resblocks, model.clip.transformer.resblocks
    assert isinstance(vis[0].attn, NarrowAttention) and vis[0].attn.head_dim == 20
    assert isinstance(vis[1].attn, NarrowAttention) and vis[1].attn.head_dim == 8
    assert isinstance(txt[0].attn, NarrowAttention) and txt[0].attn.head_dim == 12
    assert isinstance(txt[1].attn, nn.MultiheadAttention)
    assert [b.mlp.c_fc.out_features for b in (*vis, *txt)] == [96, 256, 40, 128]
    assert [b.mlp.c_proj.in_features for b in (*vis, *txt)] == [96, 256, 40, 128]


def test_report_counts(upop, loaded):
    model, info = loaded
    kept_params = _numel(upop["pruned"])  # every CLIP state-dict entry is a parameter
    dense_params = _numel(upop["dense"])
    assert kept_params == sum(p.numel() for p in model.parameters())
    fresh, _ = create_model(upop["entry"].name, weights="random")
    assert dense_params == sum(p.numel() for p in fresh.parameters())
    # hand count of what was cut: visual 0 attn 2·(32−20)·(3·64 + 3 + 64), MLP 160·(64+1+64);
    # visual 1 attn 2·24·(3·64+3+64); text 0 attn 2·4·(3·32+3+32), MLP 88·(32+1+32)
    cut = 24 * 259 + 160 * 129 + 48 * 259 + 8 * 131 + 88 * 65
    assert dense_params - kept_params == cut
    report = {
        "method": "upop",
        "parameters": kept_params,
        "dense_parameters": dense_params,
        "ratio": pytest.approx(dense_params / kept_params),
        "narrowed_blocks": NARROWED,
        "upop_parameters": kept_params + _numel(upop["momentum"]),
        "dropped_keys": len(upop["extra"]),
    }
    assert info.compression == report
    assert len(upop["extra"]) == len(upop["momentum"]) + 4 + 2 * 4
    assert info.weights == f"checkpoint:{upop['path']}"
    assert info.weights.startswith("checkpoint:")


def _write(tmp_path, state, name="bad.pth"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def _refused(upop, path) -> str:
    with pytest.raises(HiddenCostError) as err:
        create_model(upop["entry"].name, checkpoint=path)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("key", "shape"), [
    (f"{VIS}.0.attn.out_proj.weight", (64, 38)),   # h·d′ = 40 from in_proj
    (f"{TXT}.0.mlp.c_proj.weight", (32, 41)),      # m = 40 from c_fc
    (f"{VIS}.1.attn.in_proj_weight", (49, 64)),    # not 3·2·d′
    (f"{TXT}.1.attn.in_proj_bias", (95,)),         # disagrees with its (dense) in_proj weight
])
def test_wrong_shapes_are_refused_naming_the_key(upop, tmp_path, key, shape):
    state = {**upop["pruned"], **upop["extra"]}
    state[key] = torch.randn(shape)
    message = _refused(upop, _write(tmp_path, state))
    assert key in message


def test_one_dimensional_c_fc_is_refused_naming_c_fc(upop, tmp_path):
    key = f"{VIS}.0.mlp.c_fc.weight"
    state = {**upop["pruned"], **upop["extra"], key: torch.randn(96)}
    message = _refused(upop, _write(tmp_path, state))
    assert key in message
    assert f"{VIS}.0.attn.in_proj_weight" not in message  # whose shape is right


def test_unknown_key_is_refused_naming_it(upop, tmp_path):
    state = {**upop["pruned"], **upop["extra"], "foo.bar": torch.zeros(3)}
    assert "foo.bar" in _refused(upop, _write(tmp_path, state))


@pytest.mark.parametrize("key", ["visual.ln_post.weight", f"{TXT}.1.mlp.c_fc.bias",
                                 f"{VIS}.0.attn.in_proj_weight"])
def test_missing_key_is_refused_naming_it(upop, tmp_path, key):
    state = {k: v for k, v in {**upop["pruned"], **upop["extra"]}.items() if k != key}
    assert key in _refused(upop, _write(tmp_path, state))


def test_dense_state_dict_loads_as_dense(upop, tmp_path):
    path = tmp_path / "dense.pt"
    torch.save(upop["dense"], path)  # no wrapper, no momentum
    model, info = create_model(upop["entry"].name, checkpoint=path)
    count = _numel(upop["dense"])
    assert info.compression == {"method": "dense", "parameters": count,
                                "dense_parameters": count, "ratio": 1.0, "narrowed_blocks": 0,
                                "upop_parameters": None, "dropped_keys": 0}
    images = _images(seed=11, n=2)
    source = upop["towers"]
    with torch.no_grad():
        assert torch.equal(model(images), source(images))
    assert torch.equal(model.encode_texts(TEXTS), source.encode_texts(TEXTS))
    assert torch.equal(model.logit_scale, source.logit_scale)


def test_openai_metadata_keys_are_dropped_and_counted(upop, tmp_path):
    path = tmp_path / "openai.pt"
    meta = {"input_resolution": torch.tensor(64), "context_length": torch.tensor(77),
            "vocab_size": torch.tensor(49408)}
    torch.save({**upop["dense"], **meta}, path)
    _, info = create_model(upop["entry"].name, checkpoint=path)
    assert info.compression["method"] == "dense"
    assert info.compression["dropped_keys"] == 3
    assert info.compression["upop_parameters"] is None


def _attention_pair(width=32, heads=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mha = nn.MultiheadAttention(width, heads, batch_first=True).eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    narrow = NarrowAttention(width, heads, width // heads)
    narrow.load_state_dict(mha.state_dict(), strict=True)
    return mha, narrow.eval(), gen


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_narrow_attention_at_full_width_is_multihead_attention(causal, grad):
    mha, narrow, gen = _attention_pair()
    x = torch.randn(3, 9, 32, generator=gen)
    mask = torch.full((9, 9), float("-inf")).triu(1) if causal else None
    with torch.set_grad_enabled(grad):
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got, weights = narrow(x, x, x, need_weights=False, attn_mask=mask)
    assert weights is None
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if causal:  # the mask matters: the first token sees only itself
        unmasked = narrow(x, x, x)[0]
        assert (unmasked[:, 0] - got[:, 0]).abs().max() > 1e-3
        torch.testing.assert_close(unmasked[:, -1], got[:, -1], atol=1e-5, rtol=1e-5)


def test_narrow_attention_cross_attention_matches_multihead_attention():
    mha, narrow, gen = _attention_pair(seed=3)
    q, kv = torch.randn(2, 5, 32, generator=gen), torch.randn(2, 7, 32, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(narrow(q, kv, kv)[0], mha(q, kv, kv, need_weights=False)[0],
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("key", "rows"), [
    (f"{VIS}.0.attn.in_proj_weight", 3 * 2 * 10**8),  # head dimension 10⁸
    (f"{TXT}.0.mlp.c_fc.weight", 10**9),                # MLP width 10⁹
])
def test_widths_above_the_architecture_are_refused_before_allocating(upop, tmp_path, key,
                                                                       rows):
    state = {**upop["pruned"], **upop["extra"]}
    width = state[key].shape[1]
    state[key] = torch.zeros(1).expand(rows, width)  # a huge shape over one stored number
    path = tmp_path / "huge.pth"
    torch.save({"model": state}, path)
    message = _refused(upop, path)
    block = key.split(".attn.")[0].split(".mlp.")[0]
    assert "UPop only narrows" in message and f"{block} claims" in message


@pytest.mark.parametrize("key", [
    "visual_m.transformer.resblocks.0.mlp.c_fc.weight",  # a momentum copy: only counted
    "visual.ln_post.weight",                              # its declared shape fits the model
])
def test_expanded_tensors_are_refused_naming_them(upop, tmp_path, key):
    """A stride-0 tensor declares numbers the file does not hold (here 10⁹·64 over one): the
    report would count them and a model built from them would allocate them."""
    state = {**upop["pruned"], **upop["extra"]}
    shape = (10**9, 64) if key.startswith("visual_m") else state[key].shape
    state[key] = torch.zeros(1).expand(shape)
    path = _write(tmp_path, state)
    assert _refused(upop, path) == (f"checkpoint {str(path)!r}: {key} declares shape "
                       f"{tuple(shape)} ({math.prod(shape)} numbers) over 1 stored; a UPop file "
                       "stores every weight it holds")

"""CLIP image + text towers (open_clip) as a backbone family, and its pretrained weights.

An ``open_clip`` entry is built by :func:`build_towers` from open_clip's own model config (or
the entry's ``model_config``) with QuickGELU, as OpenAI trained them, and wrapped in
:class:`ClipTowers`: ``forward(x)`` is the image embedding, ``encode_texts`` the unit-norm
text embeddings. Its OpenAI weights come from open_clip (``pretrained="openai"``), which needs
internet once: without ``--download`` only an earlier download is used.

open_clip is imported where a CLIP is built or loaded, not here: importing it costs seconds
(it loads every model family it has), and every process that resolves a model name imports
this module for its registrations.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.clip.text import DEFAULT_TEMPLATE, column_texts, text_table
from hiddencost.errors import HiddenCostError
from hiddencost.model_table import (
    BackboneEntry,
    NetworkFamily,
    PretrainedCfg,
    imagenet_class_names,
    register_backbone,
    register_family,
)
from hiddencost.precision import exact
from hiddencost.weights import (
    PRIORITY_PRETRAINED,
    LoadedWeights,
    WeightRequest,
    register_weight_source,
)

if TYPE_CHECKING:
    import open_clip

#: OpenAI CLIP's normalisation (``open_clip.constants.OPENAI_DATASET_MEAN`` / ``_STD``).
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
#: The largest logit scale (the reference clamps ln s to ≤ ln 100 = 4.6052).
MAX_LOGIT_SCALE = 100.0
#: Where open_clip keeps the weights it downloaded for hiddencost.
CACHE_DIR = Path.home() / ".cache" / "hiddencost" / "open_clip"
#: The text tower's activation quantizers calibrate on :data:`DEFAULT_TEMPLATE` over every
#: this-many-th ImageNet class name (250 prompts spread over the whole list): fixed and offline,
#: as the image side's calibration images are.
CALIBRATION_CLASS_STRIDE = 4


def calibration_texts() -> list[str]:
    """The prompts that calibrate the text tower (see :data:`CALIBRATION_CLASS_STRIDE`)."""
    return column_texts(imagenet_class_names()[::CALIBRATION_CLASS_STRIDE], [DEFAULT_TEMPLATE])


def open_clip_module() -> ModuleType:
    """open_clip, imported on first use (see the module docstring)."""
    return importlib.import_module("open_clip")


class ClipTowers(nn.Module):
    """An open_clip ``CLIP`` as one frozen backbone.

    ``forward(x)`` = the image tower's embedding f(x) (projected, not normalised), so the
    library's generic code (BatchNorm probe, compression, LP features through timm's
    ``forward_features`` / ``forward_head`` interface) treats it as an image model; the class
    scores of the CLIP methods are ``logit_scale · cos(f(x), t_c)`` over text embeddings t_c
    from :meth:`encode_texts`.
    """

    def __init__(self, clip: open_clip.CLIP, context_length: int) -> None:
        super().__init__()
        self.clip = clip
        self.context_length = context_length
        self.image_size = int(clip.visual.image_size[0])
        self._tokenizer: open_clip.SimpleTokenizer | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise HiddenCostError(
                f"this CLIP takes {self.image_size}-px images (its position embeddings are fixed), "
                f"got {tuple(x.shape[-2:])}; leave --canvas-size / --lp-image-size unset")
        return self.clip.encode_image(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x  # the image embedding is the feature LP reads

    @property
    def logit_scale(self) -> torch.Tensor:
        """min(exp ln s, 100); never trained here. The reference clamps ln s to [0, ln 100]
        after each step and exponentiates: with OpenAI's fp16-stored ln s that is 100.003, not
        100 (a 0.003% larger scale; documented, not reproduced)."""
        return self.clip.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE)

    def calibrate_rest(self) -> None:
        """Run the text tower on :func:`calibration_texts`: activation calibration
        (:func:`~hiddencost.compression.quantization.calibrate_activations`) calls this after
        the images, which reach the image tower only, so that the text tower's quantizers (on
        its layers as on the image tower's) are calibrated too."""
        self.encode_texts(calibration_texts())

    @torch.no_grad()  # not inference mode: the table enters the prompt's autograd graph
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm text embeddings (float32, on the model's device), one row per text, with
        CLIP's BPE tokenizer (its vocabulary ships in the open_clip wheel)."""
        if not texts:
            raise HiddenCostError("no texts to encode (a task without class names?)")
        if self._tokenizer is None:
            self._tokenizer = open_clip_module().SimpleTokenizer(
                context_length=self.context_length)
        device = next(self.clip.parameters()).device
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = self._tokenizer(list(texts[start:start + batch_size])).to(device)
            rows.append(F.normalize(self.clip.encode_text(tokens).float(), dim=-1))
        return torch.cat(rows)


def towers_config(entry: BackboneEntry) -> dict:
    """open_clip's ``embed_dim`` / ``vision_cfg`` / ``text_cfg`` for the entry."""
    if entry.model_config is not None:
        return dict(entry.model_config)
    config = open_clip_module().get_model_config(entry.timm_arch)
    if config is None:
        raise HiddenCostError(f"open_clip has no model config {entry.timm_arch!r}")
    return config


def quick_gelu(entry: BackboneEntry) -> bool:
    """Whether the entry's towers use QuickGELU: OpenAI's weights do (and every model built from
    an explicit ``model_config``, as UPop's narrowed OpenAI towers); other weights (MobileCLIP)
    use GELU, as open_clip builds them for their tags."""
    return entry.model_config is not None or entry.cfg.hub_name == "openai"


def build_towers(entry: BackboneEntry, num_classes: int | None = None) -> ClipTowers:
    """The entry's CLIP with open_clip's random initialisation (its own builder for a named
    configuration: custom text towers and timm image towers included)."""
    config = towers_config(entry)
    if entry.model_config is not None:
        clip = open_clip_module().CLIP(config["embed_dim"], config["vision_cfg"],
                                       config["text_cfg"], quick_gelu=True)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # open_clip's note on random weights
            clip = open_clip_module().create_model(entry.timm_arch, pretrained=None,
                                                   force_quick_gelu=quick_gelu(entry))
    return ClipTowers(clip, config["text_cfg"].get("context_length", 77)).eval()


class ZeroShotScores(nn.Module):
    """CLIP as a classifier of ImageNet-1k: logit_scale · cos(f(x), t_c) over one text per
    class, "This is a photo of a {}." (:mod:`hiddencost.clip.text`), the table encoded by the
    model's own text tower on the first call."""

    def __init__(self, towers: ClipTowers) -> None:
        super().__init__()
        self.towers = towers
        self._text: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._text is None:
            self._text = text_table(self.towers, imagenet_class_names(), [DEFAULT_TEMPLATE])
        features = self.towers(x)
        with exact(x.device):  # the scores in fp32 whatever the tower's precision
            image = F.normalize(features.float(), dim=-1)
            return self.towers.logit_scale * image @ self._text.float().t()


register_family(NetworkFamily("open_clip", build_towers, lambda entry: [], ZeroShotScores))


class OpenClipWeights:
    """OpenAI's CLIP weights through open_clip (``pretrained=<tag>``), cached in
    :data:`CACHE_DIR`; a first download needs ``--download``."""

    name = "open_clip"
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return (request.checkpoint is None and request.weights == "pretrained"
                and request.entry.cfg.source == self.name)

    def load(self, request: WeightRequest) -> LoadedWeights:
        entry = request.entry
        tag = entry.cfg.hub_name
        marker = CACHE_DIR / f"{entry.timm_arch}.{tag}.done"
        if not request.download and not marker.exists():
            raise HiddenCostError(
                f"{entry.name}: open_clip downloads the {tag} weights of {entry.timm_arch} once; "
                "pass --download (or --checkpoint PATH, or --weights random)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # open_clip's notes on QuickGELU and caching
                clip = open_clip_module().create_model(entry.timm_arch, pretrained=tag,
                                              force_quick_gelu=quick_gelu(entry),
                                              cache_dir=str(CACHE_DIR))
        except Exception as exc:  # no network, hub down, corrupt cache, ...
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise HiddenCostError(
                f"could not load {tag} weights of {entry.timm_arch} through open_clip "
                f"({exc.__class__.__name__}: {first}); on an offline machine pass --checkpoint "
                "PATH or --weights random") from None
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        context = towers_config(entry)["text_cfg"].get("context_length", 77)
        return LoadedWeights(ClipTowers(clip, context).eval(), f"pretrained:open_clip:{tag}")


register_weight_source(OpenClipWeights(), PRIORITY_PRETRAINED)


def _openai(name: str, config: str, size: int, description: str) -> BackboneEntry:
    return BackboneEntry(
        name=f"{name}.openai", timm_arch=config, family="open_clip",
        cfg=PretrainedCfg(source="open_clip", hub_name="openai", input_size=size,
                          mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD, num_classes=0,
                          description=description))


def _mobileclip(name: str, config: str, size: int, description: str) -> BackboneEntry:
    """Apple's MobileCLIP (Vasu et al., CVPR'24): CLIP distilled into small image and text
    towers (multi-modal reinforced training); inputs in [0, 1], no mean/std normalisation."""
    return BackboneEntry(
        name=f"{name}.datacompdr", timm_arch=config, family="open_clip",
        cfg=PretrainedCfg(source="open_clip", hub_name="datacompdr", input_size=size,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), num_classes=0,
                          description=description))


for _entry in (
    _openai("clip_vit_b32", "ViT-B-32", 224, "CLIP ViT-B/32, OpenAI weights (open_clip)"),
    _openai("clip_vit_b16", "ViT-B-16", 224, "CLIP ViT-B/16, OpenAI weights (open_clip)"),
    _openai("clip_vit_l14", "ViT-L-14", 224, "CLIP ViT-L/14, OpenAI weights (open_clip)"),
    _openai("clip_vit_l14_336", "ViT-L-14-336", 336,
            "CLIP ViT-L/14 at 336 px, OpenAI weights (open_clip); the base of UPop's checkpoints"),
    _mobileclip("mobileclip_s1", "MobileCLIP-S1", 256,
                "MobileCLIP-S1 (FastViT image tower), DataCompDR weights (open_clip)"),
    _mobileclip("mobileclip_b", "MobileCLIP-B", 224,
                "MobileCLIP-B (ViT-B/16 image tower), DataCompDR weights (open_clip)"),
):
    register_backbone(_entry)

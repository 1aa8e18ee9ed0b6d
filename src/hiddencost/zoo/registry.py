"""The compression zoo: timm-style ``arch.tag`` names for published compressed checkpoints.

A zoo name is ``<arch>.<tag>`` where ``<arch>`` is a backbone of
:mod:`hiddencost.model_table` (its architecture and preprocessing are reused) and
``<tag>`` names the checkpoint format and its claim:

=============================  ============  ===================================================
tag (example name)             format        claim checked after the strict load
=============================  ============  ===================================================
``lth`` (``resnet50.lth``)     open_lth      the mask's sparsity (weights x mask)
``lth-l<k>``                   open_lth      mask, and ``1 - 0.8^k`` (k levels of 20% IMP)
(``resnet50.lth-l9``)
``lth-paper``                  paper_lth     the conv masks (weights x mask); the paper's
(``resnet50.lth-paper``)                     file names, see :mod:`hiddencost.zoo.paper_lth`
``<m>-s<NN>`` with m in        ist_daslab    masks (if stored), and ``NN/100``
acdc, gmp, wf, str, mfac
(``resnet50.acdc-s90``)
``rigl-s<NN>``                 rigl          masks (if stored), and ``NN/100``
(``resnet50.rigl-s90``)
``gmp-sparsezoo``              sparseml      the embedded recipe's per-layer final sparsity
(``resnet18.gmp-sparsezoo``)                 (required for this tag)
``gmp-sparsezoo-s<NN>``        sparseml      recipe (if embedded) and ``NN/100``
``vvtq-w<b>a<b>``              vvtq          every quantizer's ``nbits`` (8-bit stem / head
(``deit_tiny.vvtq-w4a4``)                    excepted) and the loaded weights' levels
=============================  ============  ===================================================

Architectures per format: open_lth any registered CNN/ViT (our own IMP tickets included);
ist_daslab: ``resnet18``, ``resnet34``, ``resnet50``; sparseml: those and ``vgg11``, ``vgg16``,
``vgg19``; rigl: ``resnet50``; vvtq:
``deit_tiny``, ``swin_tiny``. Sparsities are measured over all conv/linear weights
(:func:`hiddencost.compression.measure_sparsity`) and a tag's claim holds within
:data:`~hiddencost.zoo.common.DEFAULT_SPARSITY_TOLERANCE`. Files are local paths; where a format
has a public page it is listed in :data:`FAMILIES` (``url``), and
:func:`hiddencost.checkpoints.resolve_checkpoint_path` fetches a direct file URL on a machine with
internet.

Each family is registered as a weight source (:mod:`hiddencost.weights`) that serves the names
of its tag, and the zoo registers a name resolver, so the factory knows zoo names without a
branch; a new format is one more :class:`ZooFamily` row with its loader.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.model_table import BackboneEntry, build_network, known_archs, table_entry
from hiddencost.weights import (
    PRIORITY_FORMAT,
    LoadedWeights,
    WeightRequest,
    register_name_resolver,
    register_weight_source,
)
from hiddencost.zoo.common import (
    DEFAULT_SPARSITY_TOLERANCE,
    ZooFamily,
    ZooLoadReport,
    ZooSpec,
    check_sparsity_claim,
)
from hiddencost.zoo.ist_daslab import load_ist_daslab
from hiddencost.zoo.open_lth import load_open_lth
from hiddencost.zoo.paper_lth import load_paper_lth
from hiddencost.zoo.rigl import load_rigl
from hiddencost.zoo.sparseml import load_sparseml
from hiddencost.zoo.vvtq import load_vvtq

__all__ = [
    "FAMILIES",
    "ZooFamily",
    "ZooSpec",
    "available_zoo",
    "is_zoo_name",
    "load_zoo_checkpoint",
    "parse_zoo_name",
    "zoo_backbone_entry",
]

FAMILIES: tuple[ZooFamily, ...] = (
    ZooFamily("open_lth", r"lth(?:-l(?P<level>\d+))?", None, "resnet50.lth-l9",
              "Lottery ticket (IMP, 20%/level) in open_lth's layout: model_ep*_it*.pth + mask.pth",
              load_open_lth, "https://github.com/facebookresearch/open_lth", reads_mask=True),
    ZooFamily("paper_lth", r"lth-paper", None, "resnet50.lth-paper",
              "Lottery ticket as the paper's code stores it: <arch>_dyn4_<k>_checkpoint.pth + "
              "_mask.pth (conv masks, weight × mask)",
              load_paper_lth, "https://github.com/landskape-ai/Reprogram_LT", reads_mask=True),
    ZooFamily("ist_daslab", r"(?P<method>acdc|gmp|wf|str|mfac)-s(?P<s>\d{2})",
              ("resnet18", "resnet34", "resnet50"), "resnet50.acdc-s90",
              "IST-DASLab converted checkpoint (AC/DC, GMP, WoodFisher, STR, M-FAC)",
              load_ist_daslab, "https://seafile.ist.ac.at/d/91de9650cfb54b77b7d1/"),
    ZooFamily("rigl", r"rigl-s(?P<s>\d{2})", ("resnet50",), "resnet50.rigl-s90",
              "RigL ResNet-50 converted to PyTorch (TF-SAME max-pool padding reproduced)",
              load_rigl, "https://github.com/google-research/rigl"),
    ZooFamily("sparseml", r"gmp-sparsezoo(?:-s(?P<s>\d{2}))?",
              ("resnet18", "resnet34", "resnet50", "vgg11", "vgg16", "vgg19"),
              "resnet18.gmp-sparsezoo", "Neural Magic SparseML / SparseZoo GMP-pruned ResNet, VGG",
              load_sparseml, "https://sparsezoo.neuralmagic.com"),
    ZooFamily("vvtq", r"vvtq-w(?P<w>[2-8])a(?P<a>[2-8])", ("deit_tiny", "swin_tiny"),
              "deit_tiny.vvtq-w4a4", "VVTQ LSQ-quantized ViT (separate q/k/v, per-bit steps)",
              load_vvtq, "https://github.com/HuangOwen/Quantization-Variation"),
)


def _spec_of(name: str, arch: str, tag: str, family: ZooFamily, match: re.Match) -> ZooSpec:
    if family.archs is not None and arch not in family.archs:
        raise HiddenCostError(
            f"{family.format} checkpoints ({tag}) exist for {', '.join(family.archs)}, not {arch}"
        )
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    claimed = None
    if "level" in groups:
        claimed = 1.0 - 0.8 ** int(groups["level"])
    if "s" in groups:
        claimed = int(groups["s"]) / 100
    return ZooSpec(
        name=name, arch=arch, tag=tag, family=family, claimed_sparsity=claimed,
        weight_bits=int(groups["w"]) if "w" in groups else None,
        activation_bits=int(groups["a"]) if "a" in groups else None,
    )


def parse_zoo_name(name: str) -> ZooSpec | None:
    """``"resnet50.acdc-s90"`` -> its :class:`ZooSpec`; None when ``name`` is no zoo name."""
    arch, dot, tag = name.partition(".")
    if not dot or arch not in known_archs():
        return None
    for family in FAMILIES:
        match = re.fullmatch(family.tag_pattern, tag)
        if match is not None:
            return _spec_of(name, arch, tag, family, match)
    return None


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` is a zoo name (a registered arch with a zoo tag)."""
    try:
        return parse_zoo_name(name) is not None
    except HiddenCostError:
        return True


def _base_entry(arch: str) -> BackboneEntry:
    entry = table_entry(arch)
    assert entry is not None  # parse_zoo_name only accepts archs of the table
    return entry


def zoo_backbone_entry(name: str) -> BackboneEntry | None:
    """A :class:`~hiddencost.model_table.BackboneEntry` for a zoo name (the base architecture's
    timm arch and preprocessing, its format as ``checkpoint_format``), or None when ``name`` is
    no zoo name."""
    spec = parse_zoo_name(name)
    if spec is None:
        return None
    base = _base_entry(spec.arch)
    cfg = replace(base.cfg, description=f"{spec.family.description} ({spec.tag})")
    return BackboneEntry(name=name, timm_arch=base.timm_arch, cfg=cfg,
                         checkpoint_format=spec.family.format)


def available_zoo() -> list[ZooFamily]:
    """The zoo's checkpoint families, in table order."""
    return list(FAMILIES)


def _check_tag_claim(model: nn.Module, spec: ZooSpec, report: ZooLoadReport, source: str,
                     tolerance: float) -> None:
    if spec.claimed_sparsity is not None:
        check_sparsity_claim(model, spec.claimed_sparsity, source, f"the tag {spec.tag}",
                             tolerance)
        if report.claimed_sparsity is None:
            report.claimed_sparsity = spec.claimed_sparsity
            report.claim_source = f"tag {spec.tag}"
        else:
            report.claim_source += f" + tag {spec.tag}"
    elif spec.family.format == "sparseml" and report.claimed_sparsity is None:
        raise HiddenCostError(
            f"checkpoint {source} embeds no recipe, so nothing claims its sparsity; name the "
            f"claim in the tag, e.g. {spec.arch}.gmp-sparsezoo-s80"
        )


def load_zoo_checkpoint(
    name: str,
    checkpoint: str | Path,
    mask: str | Path | None = None,
    tolerance: float = DEFAULT_SPARSITY_TOLERANCE,
) -> tuple[nn.Module, ZooLoadReport]:
    """Build the architecture of zoo ``name`` and load ``checkpoint`` in its format, strictly.

    Returns the model (eval mode) and the loader's :class:`ZooLoadReport` (``measured_sparsity``
    is the fraction of zero conv/linear weights). Checks, in order: the format's own claim
    (masks, recipe, ``nbits``) inside the loader; then the tag's sparsity claim within
    ``tolerance``. ``mask`` overrides the lottery-ticket mask path (open_lth: ``mask.pth``
    beside the weights; paper_lth: ``<stem>_mask.pth``); other formats refuse one.
    """
    spec = parse_zoo_name(name)
    if spec is None:
        raise HiddenCostError(
            f"{name!r} is not a zoo name; tags: " + ", ".join(f.example for f in FAMILIES))
    if mask is not None and not spec.family.reads_mask:
        raise HiddenCostError(f"{spec.family.format} checkpoints ({name}) take no mask file")
    model = build_network(_base_entry(spec.arch))
    report = spec.family.loader(model, Path(checkpoint), spec,
                                Path(mask) if mask is not None else None)
    _check_tag_claim(model, spec, report, str(checkpoint), tolerance)
    return model.eval(), report


class ZooWeights:
    """The weight source of one zoo format: serves the names whose tag names the format."""

    def __init__(self, family: ZooFamily) -> None:
        self.name = family.format
        self.reads_mask = family.reads_mask

    def accepts(self, request: WeightRequest) -> bool:
        return request.entry.checkpoint_format == self.name

    def load(self, request: WeightRequest) -> LoadedWeights:
        name = request.entry.name
        if request.checkpoint is None:
            raise HiddenCostError(
                f"{name} is a published compressed checkpoint: pass its file with "
                "--checkpoint PATH (see `hiddencost zoo` for where to get it)"
            )
        model, report = load_zoo_checkpoint(name, request.checkpoint, mask=request.mask)
        return LoadedWeights(model, f"zoo:{request.checkpoint}", report.to_dict())


for _family in FAMILIES:
    register_weight_source(ZooWeights(_family), PRIORITY_FORMAT)
register_name_resolver(zoo_backbone_entry)

"""The compression zoo: timm-style ``arch.tag`` names for published compressed checkpoints.

A zoo name is ``<arch>.<tag>`` where ``<arch>`` is a backbone of
:data:`hiddencost.backbones.REGISTRY` (its architecture and preprocessing are reused) and
``<tag>`` names the checkpoint format and its claim:

=============================  ============  ===================================================
tag (example name)             format        claim checked after the strict load
=============================  ============  ===================================================
``lth`` (``resnet50.lth``)     open_lth      the mask's sparsity (weights x mask)
``lth-l<k>``                   open_lth      mask, and ``1 - 0.8^k`` (k levels of 20% IMP)
(``resnet50.lth-l9``)
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
ist_daslab, sparseml: ``resnet18``, ``resnet34``, ``resnet50``; rigl: ``resnet50``; vvtq:
``deit_tiny``, ``swin_tiny``. Sparsities are measured over all conv/linear weights
(:func:`hiddencost.compression.measure_sparsity`) and a tag's claim holds within
:data:`~hiddencost.zoo.common.DEFAULT_SPARSITY_TOLERANCE`. Files are local paths; where a format
has a public page it is listed in :data:`FAMILIES` (``url``), and :func:`download_checkpoint`
fetches a direct file URL on a machine with internet.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import timm
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import (
    DEFAULT_SPARSITY_TOLERANCE,
    ZooLoadReport,
    check_sparsity_claim,
)

__all__ = [
    "FAMILIES",
    "ZooFamily",
    "ZooSpec",
    "available_zoo",
    "download_checkpoint",
    "is_zoo_name",
    "load_zoo_checkpoint",
    "parse_zoo_name",
    "resolve_checkpoint_path",
    "zoo_backbone_entry",
]


@dataclass(frozen=True)
class ZooFamily:
    """One checkpoint format and the tags that name it."""

    format: str
    tag_pattern: str  # re.fullmatch on the tag; groups: level, s, w, a
    archs: tuple[str, ...] | None  # None: any registered arch
    example: str
    description: str
    url: str = ""  # public page listing the published files ("" if none)


FAMILIES: tuple[ZooFamily, ...] = (
    ZooFamily("open_lth", r"lth(?:-l(?P<level>\d+))?", None, "resnet50.lth-l9",
              "Lottery ticket (IMP, 20%/level) in open_lth's layout: model_ep*_it*.pth + mask.pth",
              "https://github.com/facebookresearch/open_lth"),
    ZooFamily("ist_daslab", r"(?P<method>acdc|gmp|wf|str|mfac)-s(?P<s>\d{2})",
              ("resnet18", "resnet34", "resnet50"), "resnet50.acdc-s90",
              "IST-DASLab converted checkpoint (AC/DC, GMP, WoodFisher, STR, M-FAC)",
              "https://seafile.ist.ac.at/d/91de9650cfb54b77b7d1/"),
    ZooFamily("rigl", r"rigl-s(?P<s>\d{2})", ("resnet50",), "resnet50.rigl-s90",
              "RigL ResNet-50 converted to PyTorch (TF-SAME max-pool padding reproduced)",
              "https://github.com/google-research/rigl"),
    ZooFamily("sparseml", r"gmp-sparsezoo(?:-s(?P<s>\d{2}))?",
              ("resnet18", "resnet34", "resnet50"), "resnet18.gmp-sparsezoo",
              "Neural Magic SparseML / SparseZoo GMP-pruned ResNet",
              "https://sparsezoo.neuralmagic.com"),
    ZooFamily("vvtq", r"vvtq-w(?P<w>[2-8])a(?P<a>[2-8])", ("deit_tiny", "swin_tiny"),
              "deit_tiny.vvtq-w4a4", "VVTQ LSQ-quantized ViT (separate q/k/v, per-bit steps)",
              "https://github.com/HuangOwen/Quantization-Variation"),
)


@dataclass(frozen=True)
class ZooSpec:
    """A parsed zoo name: architecture, family and what the tag claims."""

    name: str
    arch: str
    tag: str
    family: ZooFamily
    claimed_sparsity: float | None = None
    weight_bits: int | None = None
    activation_bits: int | None = None


def parse_zoo_name(name: str) -> ZooSpec | None:
    """``"resnet50.acdc-s90"`` -> its :class:`ZooSpec`; None when ``name`` is no zoo name."""
    from hiddencost.backbones import REGISTRY

    arch, dot, tag = name.partition(".")
    if not dot:
        return None
    known_archs = {e.arch for e in REGISTRY.values()}
    if arch not in known_archs:
        return None
    for family in FAMILIES:
        match = re.fullmatch(family.tag_pattern, tag)
        if match is None:
            continue
        if family.archs is not None and arch not in family.archs:
            raise HiddenCostError(
                f"{family.format} checkpoints ({tag}) exist for {', '.join(family.archs)}, "
                f"not {arch}"
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
    return None


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` is a zoo name (a registered arch with a zoo tag)."""
    try:
        return parse_zoo_name(name) is not None
    except HiddenCostError:
        return True


def _base_entry(arch: str):
    from hiddencost.backbones import resolve_backbone_name

    return resolve_backbone_name(arch)


def zoo_backbone_entry(name: str):
    """A :class:`~hiddencost.backbones.BackboneEntry` for a zoo name (the base architecture's
    timm arch and preprocessing), or None when ``name`` is no zoo name."""
    from hiddencost.backbones import BackboneEntry

    spec = parse_zoo_name(name)
    if spec is None:
        return None
    base = _base_entry(spec.arch)
    cfg = replace(base.cfg, description=f"{spec.family.description} ({spec.tag})")
    return BackboneEntry(name=name, timm_arch=base.timm_arch, cfg=cfg)


def available_zoo() -> list[ZooFamily]:
    """The zoo's checkpoint families, in table order."""
    return list(FAMILIES)


def _loader(spec: ZooSpec) -> Callable[[nn.Module, Path, Path | None], ZooLoadReport]:
    fmt = spec.family.format
    if fmt == "open_lth":
        from hiddencost.zoo.open_lth import load_open_lth

        return lambda m, p, mask: load_open_lth(m, p, mask, name=spec.name)
    if fmt == "ist_daslab":
        from hiddencost.zoo.ist_daslab import load_ist_daslab

        return lambda m, p, mask: load_ist_daslab(m, p, name=spec.name)
    if fmt == "rigl":
        from hiddencost.zoo.rigl import load_rigl

        return lambda m, p, mask: load_rigl(m, p, name=spec.name)
    if fmt == "sparseml":
        from hiddencost.zoo.sparseml import load_sparseml

        return lambda m, p, mask: load_sparseml(m, p, name=spec.name)
    if fmt == "vvtq":
        from hiddencost.zoo.vvtq import load_vvtq

        family = "deit" if spec.arch.startswith("deit") else "swin"
        return lambda m, p, mask: load_vvtq(
            m, p, family, spec.weight_bits, spec.activation_bits, name=spec.name  # type: ignore[arg-type]
        )
    raise HiddenCostError(f"no loader for format {fmt!r}")


def load_zoo_checkpoint(
    name: str,
    checkpoint: str | Path,
    mask: str | Path | None = None,
    tolerance: float = DEFAULT_SPARSITY_TOLERANCE,
) -> tuple[nn.Module, ZooLoadReport]:
    """Build the architecture of zoo ``name`` and load ``checkpoint`` in its format, strictly.

    Returns the model (eval mode) and a :class:`ZooLoadReport` whose ``measured_sparsity`` is the
    fraction of zero conv/linear weights. Checks, in order: the format's own claim (masks,
    recipe, ``nbits``) inside the loader; then the tag's sparsity claim within ``tolerance``.
    ``mask`` overrides the open_lth mask path (default: ``mask.pth`` beside the weights).
    """
    spec = parse_zoo_name(name)
    if spec is None:
        raise HiddenCostError(
            f"{name!r} is not a zoo name; tags: "
            + ", ".join(f.example for f in FAMILIES)
        )
    base = _base_entry(spec.arch)
    model = timm.create_model(base.timm_arch, pretrained=False, num_classes=base.cfg.num_classes)
    report = _loader(spec)(model, Path(checkpoint), Path(mask) if mask is not None else None)
    source = str(checkpoint)
    from hiddencost.compression.measure import measure_sparsity

    report.measured_sparsity = measure_sparsity(model)
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
    model.eval()
    return model, report


def download_checkpoint(url: str, dest: str | Path) -> Path:
    """Fetch ``url`` to ``dest`` (needs internet; torch.hub's downloader). Returns ``dest``.

    The zoo's published files sit behind share pages (see :data:`FAMILIES`), so pass the direct
    file URL you copied from the page. Offline this raises a one-line error.
    """
    from torch.hub import download_url_to_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(dest), progress=False)
    except Exception as exc:  # no network, 404, ...
        raise HiddenCostError(
            f"could not download {url} ({exc.__class__.__name__}: {exc})") from exc
    return dest


def is_url(location: str | Path) -> bool:
    """Whether a checkpoint location is an ``http(s)://`` URL rather than a path."""
    return re.match(r"https?://", str(location)) is not None


def resolve_checkpoint_path(
    location: str | Path, download: bool = False, cache_dir: str | Path | None = None
) -> Path:
    """A local checkpoint path for ``location`` (a path, or an ``http(s)://`` file URL).

    URLs are fetched only with ``download=True`` into ``cache_dir`` (default
    ``~/.cache/hiddencost/zoo``) as ``<hash of the URL>-<file name>`` (published files are often
    all called ``checkpoint.pth``), reusing an earlier download; otherwise they are an error
    that says to pass ``--download`` on a machine with internet.
    """
    location = str(location)
    if not is_url(location):
        return Path(location)
    if not download:
        raise HiddenCostError(f"{location} is a URL: pass --download (needs internet) or the "
                              "path of a downloaded copy")
    root = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache/hiddencost/zoo"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", location.rstrip("/").rsplit("/", 1)[-1]) or "ckpt"
    dest = root / f"{hashlib.sha256(location.encode()).hexdigest()[:12]}-{name}"
    return dest if dest.is_file() else download_checkpoint(location, dest)

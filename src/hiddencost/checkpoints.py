"""Checkpoint IO shared by every weight source: read safely, unwrap, rename, load strictly.

A leaf module. Checkpoints are untrusted input: ``.safetensors`` files are read with
safetensors, anything else with ``torch.load(map_location="cpu", weights_only=True)``, which
refuses pickled code; a missing, corrupt or code-carrying file is one
:class:`~hiddencost.errors.HiddenCostError` line. Loads are strict
(:func:`load_state_dict_strict`); renaming is explicit and total (:func:`remap_keys`).
``http(s)://`` locations are fetched once into a cache, only when asked
(:func:`resolve_checkpoint_path`).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.locations import is_url  # noqa: F401 (re-exported: where loaders look it up)

#: The wrapper keys a training script commonly stores its state dict under, in lookup order.
STATE_DICT_WRAPPERS: tuple[str, ...] = ("state_dict", "model_state_dict", "model")
#: File endings that name a checkpoint rather than anything else on a command line.
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".tar", ".ckpt", ".bin", ".safetensors"})
#: BatchNorm tensor names, for remap rules (``rf"...\.bn\.{BN_TENSORS}"``).
BN_TENSORS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def shorten(keys: Iterable[str], limit: int = 5) -> str:
    """``"a, b, c (+7 more)"``: a short list of keys for one-line error messages."""
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_checkpoint_object(path: str | Path) -> Any:
    """Read a checkpoint file safely and return the raw object (usually a dict)."""
    path = Path(path)
    if not path.is_file():
        raise HiddenCostError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and pickled code end up here
        raise HiddenCostError(f"cannot read checkpoint {str(path)!r}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """One line on why a file did not load. torch's refusal of pickled objects comes with advice
    to disable the safe loader, which this library never repeats: only its reason is kept."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        return (f"not a tensor-only checkpoint that the safe loader reads "
                f"({' '.join(reason.split())}); it may be corrupt or hold pickled objects, and "
                "checkpoints are never unpickled")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def extract_state_dict(
    obj: Any, source: str, wrappers: tuple[str, ...] = STATE_DICT_WRAPPERS
) -> OrderedDict[str, torch.Tensor]:
    """The flat tensor dict inside ``obj`` (first matching wrapper key, else ``obj`` itself).

    Non-tensor values inside the state dict are an error naming their keys.
    """
    if isinstance(obj, Mapping):
        for key in wrappers:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise HiddenCostError(f"checkpoint {source} does not hold a state dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise HiddenCostError(f"checkpoint {source} holds non-tensor entries: {shorten(bad)}")
    return OrderedDict((str(k), v) for k, v in obj.items())


def strip_prefix(
    state: Mapping[str, torch.Tensor], prefix: str, repeated: bool = False
) -> OrderedDict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. DataParallel's ``module.``);
    ``repeated`` removes any number of leading copies (a model wrapped twice)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        new = key.removeprefix(prefix)
        while repeated and new != key:
            key, new = new, new.removeprefix(prefix)
        out[new] = value
    return out


def read_state_dict(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """A checkpoint file as a flat state dict: read safely, the usual wrappers
    (:data:`STATE_DICT_WRAPPERS`) unwrapped, a DataParallel ``module.`` prefix stripped."""
    obj = read_checkpoint_object(path)
    return strip_prefix(extract_state_dict(obj, repr(str(path))), "module.")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor],
                           source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} keys: {shorten(keys)}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape", wrong)) if keys]
        raise HiddenCostError(
            f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def remap_keys(
    state: Mapping[str, Any],
    rules: Iterable[tuple[str, str]],
    source: str,
    ignore: Iterable[tuple[str, str]] = (),
) -> tuple[OrderedDict[str, Any], list[str]]:
    """Rename every key with the first matching ``(regex, replacement)`` rule (``re.fullmatch``;
    the replacement is a :meth:`re.Match.expand` template or a function of the match).

    Keys matching an ``ignore`` pattern ``(regex, reason)`` are dropped and returned (as
    ``"key (reason)"``); a key that matches neither is an error naming it, so nothing is ever
    silently left out. Two keys mapping to the same name are an error too.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    skip = [(re.compile(p), why) for p, why in ignore]
    out: OrderedDict[str, Any] = OrderedDict()
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        reason = next((why for p, why in skip if p.fullmatch(key)), None)
        if reason is not None:
            ignored.append(f"{key} ({reason})")
            continue
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match:
                new = replacement(match) if callable(replacement) else match.expand(replacement)
                if new in out:
                    raise HiddenCostError(f"checkpoint {source}: two keys map onto {new}")
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise HiddenCostError(
            f"checkpoint {source} has keys this format does not define: {shorten(unknown)}"
        )
    return out, ignored


def download_checkpoint(url: str, dest: str | Path) -> Path:
    """Fetch ``url`` to ``dest`` (needs internet; torch.hub's downloader). Returns ``dest``.

    Offline this raises a one-line error.
    """
    from torch.hub import download_url_to_file  # torch.hub is only needed to download

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(dest), progress=False)
    except Exception as exc:  # no network, 404, ...
        raise HiddenCostError(
            f"could not download {url} ({exc.__class__.__name__}: {exc})") from exc
    return dest


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

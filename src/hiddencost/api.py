"""What a notebook needs: the names ``import hiddencost`` offers (lazily, see its
``_API``), and the registry listings that live here.

=====================  ===========================================================================
``make_config``        one experiment's configuration (:class:`~hiddencost.config.RunConfig`)
``run_one``            run it: a typed :class:`~hiddencost.records.RunRecord`
``models``             the registered backbones, ``datasets`` the datasets, ``methods`` the
                       transfer methods of a backbone family
``parse_study``        a study from YAML text, ``load_study`` from a file or preset name
``run_study``          run a study's missing runs (resumable)
``load_results``       a study's runs as one pandas table, read without torch
``build_report``       the HTML report with every figure
=====================  ===========================================================================

Each is the library function it names; nothing prints (pass a Rich ``console`` to
``run_study`` to see progress).
"""

from __future__ import annotations

from hiddencost.backbones import available_backbones
from hiddencost.data import available_datasets
from hiddencost.prompting.catalog import METHOD_TABLES

__all__ = ["datasets", "methods", "models"]


def models() -> list[str]:
    """The registered backbone names (``arch.tag``; a bare ``arch`` means its first tag)."""
    return [entry.name for entry in available_backbones()]


def datasets() -> list[str]:
    """The registered dataset names (``imagefolder:PATH`` reads any image folder)."""
    return [info.name for info in available_datasets()]


def methods(family: str = "timm") -> list[str]:
    """The transfer methods of ``family`` backbones (``timm`` classifiers, ``open_clip``)."""
    return list(METHOD_TABLES[family])

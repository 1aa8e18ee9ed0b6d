"""CLIP as a backbone family (open_clip image + text towers) and its weight sources: OpenAI's
weights through open_clip, and UPop's structurally pruned checkpoints.

Importing the package registers the family, the CLIP entries of the model table and the two
weight sources (:mod:`hiddencost.clip.towers`, :mod:`hiddencost.clip.upop`).
"""

from hiddencost.clip.towers import ClipTowers, build_towers
from hiddencost.clip.upop import DROPPED, load_upop

__all__ = ["DROPPED", "ClipTowers", "build_towers", "load_upop"]

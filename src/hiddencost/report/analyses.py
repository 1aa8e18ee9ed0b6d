"""The paper's analyses, one function each, from the tidy run table of
:mod:`hiddencost.report.table` to the table behind a figure (a DataFrame), all under one name.

Each analysis lives in the module of the report section that shows it
(:mod:`hiddencost.report.sections`); those several sections use, and the conventions every
analysis follows, are in :mod:`hiddencost.report.common`.
"""

from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    delta_heatmap,
    largest_budget,
    max_seeds,
    metric_vs_compression,
    most_compressed,
)
from hiddencost.report.sections.accuracy import accuracy_vs_budget
from hiddencost.report.sections.calibration import ece_vs_compression, reliability_table
from hiddencost.report.sections.classes import class_gains_drops
from hiddencost.report.sections.clip import clip_runs, clip_table
from hiddencost.report.sections.confidence import confidence_vs_compression
from hiddencost.report.sections.crossmodal import crossmodal_table, sequence_runs
from hiddencost.report.sections.fidelity import (
    FIDELITY_METRICS,
    fidelity_rank_correlation,
    fidelity_table,
    fidelity_vs_cost,
)
from hiddencost.report.sections.mapping import (
    IMAGENET_GROUPS,
    closeness,
    imagenet_group,
    label_mapping_table,
)
from hiddencost.report.sections.prompts import (
    Prompts,
    load_final_prompt,
    load_prompts,
    loss_trajectories,
    prompt_distance,
    prompt_image,
    prompt_mask,
    prompt_snapshots,
)
from hiddencost.report.sections.summary import summary_table

__all__ = [
    "COMPRESSION_META", "FIDELITY_METRICS", "IMAGENET_GROUPS", "PERCENT", "TASK", "Prompts",
    "accuracy_vs_budget", "class_gains_drops", "clip_runs", "clip_table", "closeness",
    "confidence_vs_compression", "crossmodal_table", "delta_heatmap", "ece_vs_compression",
    "fidelity_rank_correlation", "fidelity_table", "fidelity_vs_cost", "imagenet_group",
    "label_mapping_table", "largest_budget", "load_final_prompt", "load_prompts",
    "loss_trajectories", "max_seeds", "metric_vs_compression", "most_compressed",
    "prompt_distance", "prompt_image", "prompt_mask", "prompt_snapshots", "reliability_table",
    "sequence_runs", "summary_table",
]

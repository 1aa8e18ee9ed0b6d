"""The confidence section: confidence when correct and KL to uniform when wrong, against the
compression level (the paper's Figures 10–13)."""

from __future__ import annotations

import pandas as pd

from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder, _metric_plot
from hiddencost.report.common import metric_vs_compression
from hiddencost.report.html import Section


def confidence_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figures 10–13: mean confidence of the true class over correctly classified
    test samples, ``(1/|C|) Σ_{i∈C} p_{i,y_i}``, and mean ``KL(p_i ‖ u) = Σ_k p_ik log(K p_ik)``
    (nats) over misclassified samples, and the paper's own value of the latter, ``KL(u ‖ p_i)/K``
    (:func:`hiddencost.metrics.paper_kl_uniform_incorrect`, what its Figures 11 and 13 plot),
    against the compression level; the metrics stacked (column ``metric``)."""
    parts = [metric_vs_compression(df, m) for m in
             ("mean_confidence_correct", "kl_to_uniform_incorrect",
              "paper_kl_uniform_incorrect")]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return metric_vs_compression(df, "mean_confidence_correct")
    return pd.concat(parts, ignore_index=True)


CONFIDENCE = TaskFigure(
    "confidence-correct", "Confidence when correct",
    "Mean softmax probability of the true class over correctly classified test samples "
    "against the compression level, one line per data budget; {seeds}.",
    _metric_plot("true-class confidence (probability)"))
KL = TaskFigure(
    "kl-incorrect", "KL to uniform when wrong",
    "Mean KL(p ‖ uniform) in nats over misclassified test samples against the compression "
    "level (0 = maximally unsure, log K = one-hot), one line per data budget; {seeds}. This "
    "is our convention; the paper's Figures 11 and 13 plot the reverse divergence, shown next.",
    _metric_plot("KL(p ‖ u) (nats)"))
KL_PAPER = TaskFigure(
    "kl-incorrect-paper", "KL to uniform when wrong, the paper's convention",
    "The value the paper's Figures 11 and 13 plot: its code's F.kl_div(log p, u), i.e. "
    "KL(u ‖ p)/K averaged over misclassified test samples (0 = uniform, unbounded as a class's "
    "probability goes to 0), against the compression level, one line per data budget; {seeds}.",
    _metric_plot("KL(u ‖ p) / K (nats)"))


def _fill_confidence(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = confidence_vs_compression(b.df)
    b.save_table("confidence_vs_compression", t)
    correct = t[t["metric"] == "mean_confidence_correct"]
    wrong = t[t["metric"] == "kl_to_uniform_incorrect"]
    wrong_paper = t[t["metric"] == "paper_kl_uniform_incorrect"]
    for task in tasks:
        b.task_figure(s, CONFIDENCE, task, correct)
        b.task_figure(s, KL, task, wrong)
        b.task_figure(s, KL_PAPER, task, wrong_paper)


SECTION = SectionSpec(
    "confidence", "Confidence analyses",
    "How sure the models are when right and when wrong (the paper's Figures "
    "10–13).", _fill_confidence)

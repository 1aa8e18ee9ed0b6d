# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # A study's results in pandas, and a figure redrawn
#
# Run a small study (resumable: a second run executes nothing), read every run back as one
# pandas table without loading torch, and redraw the report's "accuracy vs data budget"
# figure your own way. Offline, on a CPU, in a few minutes; `jupytext --to notebook
# results_in_pandas.py` makes it a notebook.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed
import matplotlib.pyplot as plt  # noqa: E402

import hiddencost as hc  # noqa: E402

OUT = Path("example-results/budget-demo")
spec = hc.parse_study("""
name: budget-demo
model: [efficientnet_lite0]
dataset: [digits]
compression: [{method: none}, {method: magnitude, sparsity: 0.5}]
method: [ilm, lp]
n_shot: [1, 4]
params: {epochs: 1, canvas_size: 32, inner_size: 16, lp_image_size: 32, device: cpu}
""")
summary = hc.run_study(spec, out=OUT, fidelity=False)

# %% [markdown]
# `load_results` gives one row per run: the grid's axes, every setting and every scalar metric.

# %%
df = hc.load_results(spec, out=OUT)
print(df[["compression", "method", "n_shot_label", "accuracy", "ece", "sparsity"]])

# %% [markdown]
# The hidden cost per method and budget: dense minus compressed accuracy.

# %%
acc = df.pivot_table(index=["method", "n_shot"], columns="compression", values="accuracy")
acc["cost"] = acc["dense"] - acc.drop(columns="dense").iloc[:, 0]
print(acc.round(3))

# %% [markdown]
# The report's accuracy-vs-budget figure, redrawn: one panel per method, one line per
# compression point.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True, layout="constrained")
for ax, (method, runs) in zip(axes, df.groupby("method"), strict=True):
    for compression, line in runs.groupby("compression"):
        line = line.sort_values("n_shot")
        ax.plot(line["n_shot"], line["accuracy"], marker="o", label=compression)
    budgets = sorted(runs["n_shot"].unique())
    ax.set(title=method.upper(), xlabel="examples per class", xscale="log", xticks=budgets,
           xticklabels=[str(b) for b in budgets])
    ax.minorticks_off()
axes[0].set_ylabel("test accuracy")
axes[1].legend()
fig.savefig(OUT / "accuracy_vs_budget.png", dpi=100)
print("figure:", OUT / "accuracy_vs_budget.png")

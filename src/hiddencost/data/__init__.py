"""Target tasks: the dataset registry and its splits, the few-shot sampler, the batch-size table."""

from hiddencost.data.datasets import (
    DATASETS,
    DatasetInfo,
    available_datasets,
    dataset_info,
    dataset_key,
    image_dataset,
    load_dataset,
)
from hiddencost.data.few_shot import (
    BATCH_SIZE_BY_SHOT,
    FewShotSubset,
    batch_size_for,
    few_shot_indices,
    parse_n_shot,
)
from hiddencost.data.splits import stratified_split
from hiddencost.data.task import TaskData

__all__ = [
    "BATCH_SIZE_BY_SHOT",
    "DATASETS",
    "DatasetInfo",
    "FewShotSubset",
    "TaskData",
    "available_datasets",
    "batch_size_for",
    "dataset_info",
    "dataset_key",
    "few_shot_indices",
    "image_dataset",
    "load_dataset",
    "parse_n_shot",
    "stratified_split",
]

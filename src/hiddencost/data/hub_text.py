"""The paper's text tasks (Yelp polarity, IMDB, AG News, DBPedia-14) through Hugging Face
``datasets``, read from the data root.

**Where the data lives.** ``ROOT/<name>/train.<ext>`` and ``ROOT/<name>/test.<ext>`` (``ext``:
``parquet``, ``csv``, ``jsonl`` or ``json``), in the Hub dataset's own schema (the columns and
label order of :data:`HUB_TEXT_TASKS`). ``--download`` fills that folder once:
``datasets.load_dataset(hub_id)`` fetches the official train / test splits and each is written
as ``ROOT/<name>/<split>.parquet``. Without ``--download`` nothing is fetched: the files are read
through ``datasets.load_dataset("parquet" | "csv" | "json", data_files=...)`` and a missing
folder is a one-line error saying what to put there. So a run never reaches the Hub unless
asked, and files copied from elsewhere (the Hub's own parquet exports, renamed) work as they
are. Reading writes nothing under ROOT (a read-only data root works): ``datasets`` keeps its
Arrow cache where it keeps it for everything, ``HF_DATASETS_CACHE`` (default
``~/.cache/huggingface/datasets``).

**Splits.** The official train / test splits; N-shot sampling draws from train as for images.

**Tokens.** Word pieces (:mod:`hiddencost.data.text`): by default a WordPiece vocabulary trained
on the training split; ``<name>:TOKENIZER`` (e.g. ``ag_news:bert-base-cased``, the reference's
tokenizer, or a path to a ``tokenizer.json``) uses that pretrained tokenizer instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiddencost.data.sequences import SequenceTask
from hiddencost.data.text import require_text_package, text_task
from hiddencost.errors import HiddenCostError

__all__ = ["HUB_TEXT_TASKS", "HubText", "hub_text_task", "read_hub_text"]

SPLITS = ("train", "test")
#: File formats read, by extension, in the order they are looked for.
FORMATS = {"parquet": "parquet", "csv": "csv", "jsonl": "json", "json": "json"}


@dataclass(frozen=True)
class HubText:
    """A text classification dataset on the Hugging Face Hub."""

    name: str
    hub_id: str
    #: The column holding the text fed to the model.
    text_column: str
    #: The Hub's ``ClassLabel`` names, in label order (checked when a file carries them).
    hub_label_names: tuple[str, ...]
    #: Readable class names, in the same order.
    class_names: tuple[str, ...]
    label_column: str = "label"

    @property
    def title(self) -> str:
        return f"{self.name} (Hugging Face {self.hub_id})"


DBPEDIA_CLASSES = (
    "Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
    "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal", "Plant", "Album",
    "Film", "WrittenWork")

#: The paper's four text tasks (Table 3). DBPedia's text is its ``content`` column (the title is
#: left out, as in the reference).
HUB_TEXT_TASKS: dict[str, HubText] = {
    t.name: t
    for t in (
        HubText("yelp_polarity", "fancyzhx/yelp_polarity", "text", ("1", "2"),
                ("negative", "positive")),
        HubText("imdb", "stanfordnlp/imdb", "text", ("neg", "pos"), ("negative", "positive")),
        HubText("ag_news", "fancyzhx/ag_news", "text",
                ("World", "Sports", "Business", "Sci/Tech"),
                ("World", "Sports", "Business", "Sci/Tech")),
        HubText("dbpedia_14", "fancyzhx/dbpedia_14", "content", DBPEDIA_CLASSES,
                DBPEDIA_CLASSES),
    )
}


def _split_files(folder: Path) -> dict[str, Path] | None:
    """``{"train": path, "test": path}`` of the first format that has both splits, else None."""
    for ext in FORMATS:
        files = {s: folder / f"{s}.{ext}" for s in SPLITS}
        if all(p.is_file() for p in files.values()):
            return files
    return None


def _download(spec: HubText, root: Path, folder: Path) -> None:
    """Fetch the official splits from the Hub and write them as ``folder/<split>.parquet``."""
    import datasets  # optional (the text extra): only these tasks need it

    try:
        hub = datasets.load_dataset(spec.hub_id)  # the library's own cache, not the data root
    except Exception as exc:  # network, auth and Hub errors all end the same way
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HiddenCostError(f"could not download {spec.hub_id} into {root}: {first}") from None
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        hub[split].to_parquet(str(folder / f"{split}.parquet"))


def _check_labels(spec: HubText, table, path: Path) -> np.ndarray:
    import datasets

    feature = table.features[spec.label_column]
    if isinstance(feature, datasets.ClassLabel) and tuple(feature.names) != spec.hub_label_names:
        raise HiddenCostError(f"{path}: label names {feature.names} are not {spec.name}'s "
                              f"{list(spec.hub_label_names)}")
    k = len(spec.class_names)
    labels = np.asarray([_label(v, i, spec, path) for i, v in
                         enumerate(table[spec.label_column])], dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise HiddenCostError(f"{path}: labels must lie in 0..{k - 1} ({spec.name}'s "
                              f"{', '.join(spec.hub_label_names)}), found "
                              f"{labels.min()}..{labels.max()}")
    return labels


def _label(value: object, row: int, spec: HubText, path: Path) -> int:
    """A label cell as a class index: an integer (also as a whole float or digits, as CSV
    readers infer them), or one of the Hub's label names, tried first; anything else, an empty
    cell included, is a one-line error. (The range is checked after.)"""
    if isinstance(value, str):
        if value in spec.hub_label_names:
            return spec.hub_label_names.index(value)
        if value.strip().lstrip("-").isdigit():
            return int(value)
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    empty = value is None or (isinstance(value, float) and value != value)  # NaN: empty cell
    raise HiddenCostError(f"{path}: the label of row {row} is "
                          f"{'empty' if empty else repr(value)}, not a class index or one of "
                          f"{spec.name}'s names {', '.join(spec.hub_label_names)}")


def _text(value: object) -> str:
    """A text cell as text: an empty cell is "", a number its digits."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def read_hub_text(spec: HubText, root: Path,
                  download: bool = False) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{split: (texts, labels)}`` of the official train / test splits under
    ``root/<name>``, fetched there first with ``download`` when absent (see the module)."""
    require_text_package("datasets")
    import datasets

    folder = root / spec.name
    files = _split_files(folder)
    if files is None and download:
        _download(spec, root, folder)
        files = _split_files(folder)
    if files is None:
        raise HiddenCostError(
            f"dataset '{spec.name}' not found under {folder} (train.parquet and test.parquet, "
            f"or .csv/.jsonl, with columns {spec.text_column!r} and {spec.label_column!r}); "
            f"pass --download to fetch {spec.hub_id} from the Hugging Face Hub (needs internet)")
    builder = FORMATS[files["train"].suffix[1:]]
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # reading local files is quick; the CLI has its own bars
    try:
        # the Arrow cache goes where datasets keeps it (HF_DATASETS_CACHE), never under the
        # data root, which may be read-only
        loaded = datasets.load_dataset(builder, data_files={s: str(p) for s, p in files.items()})
    except Exception as exc:  # a malformed file: name it in one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HiddenCostError(f"cannot read {spec.name} from {folder}: {first}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    out = {}
    for split in SPLITS:
        table, path = loaded[split], files[split]
        missing = [c for c in (spec.text_column, spec.label_column)
                   if c not in table.column_names]
        if missing:
            raise HiddenCostError(f"{path} has no column {', '.join(map(repr, missing))} "
                                  f"(it has {', '.join(table.column_names)})")
        texts = [_text(t) for t in table[spec.text_column]]
        out[split] = (texts, _check_labels(spec, table, path))
    return out


def hub_text_task(spec: HubText, root: Path, download: bool = False,
                  tokenizer: str | None = None) -> SequenceTask:
    """The task as a :class:`SequenceTask` of word pieces (see the module)."""
    splits = read_hub_text(spec, root, download)
    return text_task(spec.name, list(spec.class_names), *splits["train"], *splits["test"],
                     f"{spec.title}: official train / test", tokenizer)

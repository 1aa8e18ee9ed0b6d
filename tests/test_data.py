"""Data layer: dataset registry and splits, few-shot sampling, batch-size table.

Torchvision datasets cannot be downloaded here (no internet), so EuroSAT, Caltech101 and image
folders are written to ``tmp_path`` in torchvision's exact layouts. Every fake image is one solid
colour unique to its file, so a loaded image can be traced back to the file it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from hiddencost.data import (
    BATCH_SIZE_BY_SHOT,
    TaskData,
    available_datasets,
    batch_size_for,
    few_shot_indices,
    load_dataset,
    parse_n_shot,
    stratified_split,
)
from hiddencost.errors import HiddenCostError

SMALL = 16  # storage size for fake datasets: keeps the tests fast

# Solid colours at least 80 apart per channel step; the first 4 are gray (r == g == b) so that
# grayscale files get identifiable colours too.
_LEVELS = (20, 100, 180, 250)
GRAYS = [(v, v, v) for v in _LEVELS]
COLOURS = [(r, g, b) for r in _LEVELS for g in _LEVELS for b in _LEVELS if not r == g == b]


class Palette:
    """Hands out unique colours and maps a loaded image back to its file."""

    def __init__(self) -> None:
        self.colours = list(COLOURS)
        self.grays = list(GRAYS)
        self.files: dict[tuple[int, int, int], str] = {}

    def write(self, path: Path, gray: bool = False, mode: str = "RGB") -> None:
        colour = (self.grays if gray else self.colours).pop(0)
        self.files[colour] = f"{path.parent.name}/{path.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if gray:
            Image.new("L", (12, 10), colour[0]).save(path, quality=95)
        elif mode == "RGBA":
            Image.new("RGBA", (12, 10), (*colour, 128)).save(path)
        else:
            Image.new("RGB", (12, 10), colour).save(path, quality=95)

    def identify(self, image: torch.Tensor) -> str:
        mean = image.float().mean(dim=(1, 2))
        known = torch.tensor(list(self.files), dtype=torch.float32)
        distance = (known - mean).abs().max(dim=1).values
        best = int(distance.argmin())
        assert distance[best] < 15, f"image colour {mean.tolist()} matches no file"
        return self.files[tuple(int(v) for v in known[best])]

    def trace(self, images: torch.Tensor) -> list[str]:
        return [self.identify(image) for image in images]


def assert_clean_split(task: TaskData, palette: Palette) -> None:
    """Train and test are disjoint, cover every file once, and carry each file's label."""
    train, test = palette.trace(task.train_images), palette.trace(task.test_images)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(palette.files.values())
    for files, labels in ((train, task.train_labels), (test, task.test_labels)):
        for file, label in zip(files, labels.tolist(), strict=True):
            assert task.class_names[label] == file.split("/")[0]


# --------------------------------------------------------------------------- digits


def test_digits_offline_and_stratified():
    task = load_dataset("digits")
    assert task.num_classes == 10 and task.class_names == [str(d) for d in range(10)]
    assert len(task.train_labels) + len(task.test_labels) == 1797
    assert task.image_size == task.inner_size == 32
    assert task.train_images.shape[1:] == (3, 32, 32) and task.train_images.dtype == torch.uint8
    assert task.train_labels.dtype == torch.int64
    totals = torch.bincount(torch.cat([task.train_labels, task.test_labels]), minlength=10)
    test_counts = torch.bincount(task.test_labels, minlength=10)
    assert ((test_counts.float() - 0.25 * totals.float()).abs() <= 1).all()
    assert "random_state=0" in task.split_note


def test_digits_split_indices_disjoint_and_match_images():
    digits = load_digits()
    train_idx, test_idx = stratified_split(digits.target, 0.25, seed=0)
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(1797))
    task = load_dataset("digits", image_size=8)  # no resize: compare with the raw values
    raw = torch.from_numpy(np.round(digits.images / 16 * 255)).to(torch.uint8)
    assert torch.equal(task.train_images[:, 0], raw[torch.from_numpy(train_idx)])
    assert torch.equal(task.test_images[:, 2], raw[torch.from_numpy(test_idx)])
    assert torch.equal(task.train_labels, torch.from_numpy(digits.target[train_idx]).long())
    assert int(task.train_images.max()) == 255


def test_digits_deterministic_and_seeded():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train_images, b.train_images)
    assert torch.equal(a.test_labels, b.test_labels)
    c = load_dataset("digits", split_seed=1)
    assert len(c.test_labels) == len(a.test_labels)
    assert not torch.equal(a.test_images, c.test_images)


# --------------------------------------------------------------------------- few-shot


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 5, (300,), generator=generator)


def test_few_shot_exact_counts(labels):
    subset = few_shot_indices(labels, 7, seed=0)
    assert len(subset) == 35 and subset.requested == 7
    assert subset.effective_counts == {c: 7 for c in range(5)}
    assert len(set(subset.indices.tolist())) == 35
    picked = labels[subset.indices]
    assert picked.tolist() == sorted(picked.tolist())  # grouped by class, ascending
    assert subset.indices.dtype == torch.int64 and subset.short_classes == []


def test_few_shot_deterministic_and_seed_dependent(labels):
    a, b = few_shot_indices(labels, 5, seed=3), few_shot_indices(labels, 5, seed=3)
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, few_shot_indices(labels, 5, seed=4).indices)


def test_few_shot_nested(labels):
    small, large = few_shot_indices(labels, 2, seed=11), few_shot_indices(labels, 10, seed=11)
    for c in range(5):
        s = small.indices[labels[small.indices] == c]
        big = large.indices[labels[large.indices] == c]
        assert torch.equal(s, big[:2])


def test_few_shot_class_independent_of_other_classes(labels):
    # Dropping class 0's examples does not change what class 3 gets.
    keep = torch.nonzero(labels != 0, as_tuple=True)[0]
    full = few_shot_indices(labels, 4, seed=5)
    reduced = few_shot_indices(labels[keep], 4, seed=5)
    mine = full.indices[labels[full.indices] == 3]
    theirs = keep[reduced.indices[labels[keep][reduced.indices] == 3]]
    assert torch.equal(mine, theirs)


def test_few_shot_short_class_records_effective_count():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 6)
    subset = few_shot_indices(labels, 5, seed=0, num_classes=4)
    assert subset.effective_counts == {0: 5, 1: 3, 2: 5, 3: 0}
    assert subset.short_classes == [1, 3]
    assert sorted(subset.indices[5:8].tolist()) == [10, 11, 12]


def test_few_shot_full_and_invalid(labels):
    full = few_shot_indices(labels, None, seed=0)
    assert torch.equal(full.indices, torch.arange(300)) and full.requested is None
    assert sum(full.effective_counts.values()) == 300
    for bad in (0, -3):
        with pytest.raises(HiddenCostError):
            few_shot_indices(labels, bad, seed=0)


def test_batch_size_table():
    expected = {1: 8, 2: 8, 5: 16, 10: 32, 20: 32, 50: 64, 100: 128}
    assert BATCH_SIZE_BY_SHOT == expected
    for n, batch in expected.items():
        assert batch_size_for(n) == batch
    assert batch_size_for(None) == 128
    assert [batch_size_for(n) for n in (3, 15, 60, 5000)] == [8, 32, 64, 128]
    with pytest.raises(HiddenCostError):
        batch_size_for(0)


def test_parse_n_shot():
    assert parse_n_shot("full") is None and parse_n_shot(" ALL ") is None
    assert parse_n_shot(None) is None
    assert parse_n_shot("10") == 10 and parse_n_shot(5) == 5
    for bad in ("0", "-1", 0, "ten", "2.5", True):
        with pytest.raises(HiddenCostError):
            parse_n_shot(bad)


# --------------------------------------------------------------------------- torchvision layouts


def make_eurosat(root: Path) -> Palette:
    palette = Palette()
    for cls in ("AnnualCrop", "Forest", "River"):
        for i in range(5):
            palette.write(root / "eurosat" / "2750" / cls / f"{cls}_{i + 1}.jpg")
    return palette


def make_caltech101(root: Path) -> tuple[Palette, Palette]:
    palette, background = Palette(), Palette()
    base = root / "caltech101" / "101_ObjectCategories"
    for cls in ("Faces_easy", "accordion", "camera"):
        for i in range(5):
            palette.write(base / cls / f"image_{i + 1:04d}.jpg", gray=cls == "camera" and i == 0)
    background.colours = list(palette.colours)  # not reused by the real classes
    for i in range(2):
        background.write(base / "BACKGROUND_Google" / f"image_{i + 1:04d}.jpg")
    return palette, background


def test_eurosat_split_is_clean(tmp_path):
    palette = make_eurosat(tmp_path)
    task = load_dataset("eurosat", root=tmp_path, image_size=SMALL)
    assert task.class_names == ["AnnualCrop", "Forest", "River"]
    assert (len(task.train_labels), len(task.test_labels)) == (12, 3)
    assert torch.bincount(task.test_labels).tolist() == [1, 1, 1]
    assert task.train_images.shape == (12, 3, SMALL, SMALL) and task.inner_size == 128
    assert_clean_split(task, palette)
    again = load_dataset("eurosat", root=tmp_path, image_size=SMALL)
    assert torch.equal(again.test_images, task.test_images)
    others = [
        load_dataset("eurosat", root=tmp_path, image_size=SMALL, split_seed=s) for s in (1, 2)
    ]
    for other in others:
        assert_clean_split(other, palette)
    assert any(
        set(palette.trace(o.test_images)) != set(palette.trace(task.test_images)) for o in others
    )


def test_eurosat_default_size_is_inner_size(tmp_path):
    make_eurosat(tmp_path)
    task = load_dataset("eurosat", root=str(tmp_path))
    assert task.image_size == 128 and task.train_images.shape[-2:] == (128, 128)


def test_caltech101_split_is_clean(tmp_path):
    palette, background = make_caltech101(tmp_path)
    task = load_dataset("caltech101", root=tmp_path, image_size=SMALL)
    assert task.class_names == ["Faces_easy", "accordion", "camera"]  # no BACKGROUND_Google
    assert (len(task.train_labels), len(task.test_labels)) == (12, 3)
    assert_clean_split(task, palette)
    gray_file = "camera/image_0001.jpg"
    everything = torch.cat([task.train_images, task.test_images])
    (gray,) = [im for im in everything if palette.identify(im) == gray_file]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert set(background.files.values()).isdisjoint(palette.trace(everything))


def test_caltech101_subset_feeds_few_shot(tmp_path):
    make_caltech101(tmp_path)
    task = load_dataset("caltech101", root=tmp_path, image_size=SMALL)
    subset = few_shot_indices(task.train_labels, 10, seed=0, num_classes=task.num_classes)
    assert subset.effective_counts == {0: 4, 1: 4, 2: 4}
    assert task.train_images[subset.indices].shape[0] == 12


def test_dtd_pools_train_and_val(tmp_path):
    # DTD reads its classes from each split file; val lacks "banded" here, so its labels must be
    # remapped onto the training class list when train + val are pooled.
    palette = Palette()
    data = tmp_path / "dtd" / "dtd"
    splits = {
        "train1.txt": [("banded", 2), ("dotted", 2), ("zigzagged", 2)],
        "val1.txt": [("dotted", 1), ("zigzagged", 2)],
        "test1.txt": [("banded", 1), ("dotted", 1), ("zigzagged", 1)],
    }
    (data / "labels").mkdir(parents=True)
    for split_file, contents in splits.items():
        lines = []
        for cls, count in contents:
            for i in range(count):
                name = f"{split_file[:-5]}_{i}.jpg"
                palette.write(data / "images" / cls / name)
                lines.append(f"{cls}/{name}")
        (data / "labels" / split_file).write_text("\n".join(lines) + "\n")
    task = load_dataset("dtd", root=tmp_path, image_size=SMALL)
    assert task.class_names == ["banded", "dotted", "zigzagged"]
    assert task.train_labels.tolist() == [0, 0, 1, 1, 2, 2, 1, 2, 2]
    assert task.test_labels.tolist() == [0, 1, 2]
    assert_clean_split(task, palette)
    assert "train + val" in task.split_note


def test_imagefolder_with_train_and_test(tmp_path):
    palette = Palette()
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                mode = "RGBA" if (split, cls, i) == ("train", "dog", 0) else "RGB"
                palette.write(tmp_path / split / cls / f"{split}{i}.png", mode=mode)
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)
    assert task.class_names == ["cat", "dog"] and task.inner_size == 128
    assert task.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert task.test_labels.tolist() == [0, 0, 1, 1]
    train, test = palette.trace(task.train_images), palette.trace(task.test_images)
    assert all(name.startswith("train") for name in (f.split("/")[1] for f in train))
    assert all(name.startswith("test") for name in (f.split("/")[1] for f in test))
    assert len(set(train + test)) == 10


def test_imagefolder_mismatched_classes(tmp_path):
    palette = Palette()
    palette.write(tmp_path / "train" / "cat" / "a.png")
    palette.write(tmp_path / "train" / "dog" / "b.png")
    palette.write(tmp_path / "test" / "cat" / "c.png")
    palette.write(tmp_path / "test" / "bird" / "d.png")
    with pytest.raises(HiddenCostError, match="differ"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)


def test_imagefolder_without_split(tmp_path):
    palette = Palette()
    for cls in ("a", "b", "c"):
        for i in range(5):
            palette.write(tmp_path / cls / f"{i}.png")
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL, split_seed=3)
    assert (len(task.train_labels), len(task.test_labels)) == (12, 3)
    assert_clean_split(task, palette)
    assert "random_state=3" in task.split_note


def test_imagefolder_bad_paths(tmp_path):
    with pytest.raises(HiddenCostError):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(HiddenCostError, match="train/ and test/"):
        load_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(HiddenCostError, match="imagefolder:PATH"):
        load_dataset("imagefolder")


# --------------------------------------------------------------------------- errors and registry


@pytest.mark.parametrize("name", ["eurosat", "caltech101", "cifar10", "flowers102", "dtd"])
def test_missing_data_asks_for_download(tmp_path, name):
    with pytest.raises(HiddenCostError, match="--download") as info:
        load_dataset(name, root=tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_no_root_asks_for_download():
    with pytest.raises(HiddenCostError, match="--download"):
        load_dataset("svhn")


def test_unknown_dataset():
    with pytest.raises(HiddenCostError, match="digits") as info:
        load_dataset("imagenet-z")
    assert "caltech101" in str(info.value)
    with pytest.raises(HiddenCostError):
        load_dataset("cifar10:/tmp")


def test_registry():
    infos = {info.name: info for info in available_datasets()}
    assert set(infos) == {
        "digits",
        "cifar10",
        "svhn",
        "gtsrb",
        "dtd",
        "flowers102",
        "oxford_pets",
        "eurosat",
        "caltech101",
        "imagefolder",
        "splice",
        "bbc_news",
        "yelp_polarity",
        "imdb",
        "ag_news",
        "dbpedia_14",
    }
    assert {n for n, i in infos.items() if i.modality == "sequence"} == {
        "splice", "bbc_news", "yelp_polarity", "imdb", "ag_news", "dbpedia_14"}
    assert infos["dbpedia_14"].num_classes == 14 and infos["imdb"].needs_root
    assert {n for n, i in infos.items() if i.inner_size == 32} == {
        "digits",
        "cifar10",
        "svhn",
        "gtsrb",
    }
    assert infos["digits"].needs_root is False and infos["imagefolder"].num_classes is None
    assert infos["gtsrb"].num_classes == 43 and infos["caltech101"].num_classes == 101


def test_taskdata_validates_shapes():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError):
        TaskData("x", ["a", "b"], images.float(), labels, images, labels, 4, 4, "note")
    with pytest.raises(ValueError):
        TaskData("x", ["a"], images, labels, images, labels, 4, 4, "note")
    task = TaskData("x", ["a", "b"], images, labels, images, labels, 4, 4, "note")
    assert task.num_classes == 2 and "train=2" in repr(task)


def test_imagefolder_reads_only_regular_files(tmp_path):
    palette = Palette()
    for cls in ("a", "b"):
        for i in range(5):
            palette.write(tmp_path / cls / f"{i}.png")
    os.mkfifo(tmp_path / "a" / "x.png")  # reading it would block forever
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)
    assert len(task.train_labels) + len(task.test_labels) == 10


def test_a_decompression_bomb_is_one_line_or_skipped(tmp_path, monkeypatch):
    from PIL import Image

    palette = Palette()
    for cls in ("a", "b"):
        for i in range(5):
            palette.write(tmp_path / cls / f"{i}.png")
    # PIL refuses images over twice its pixel limit: with a limit of 50 px every 12×10 file
    # here is a "bomb", as a 100k × 100k one is with the real limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(HiddenCostError, match="cannot read image .*0.png.*decompression bomb"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)
    with pytest.raises(HiddenCostError, match="no readable image .decoding images.: all 10"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL, skip_unreadable=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "a" / "0.png")  # one bomb among small files
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL, skip_unreadable=True)
    assert len(task.skipped_images) == 1 and task.skipped_images[0].endswith("a/0.png")
    assert len(task.train_labels) + len(task.test_labels) == 9


# --------------------------------------------------------------------------- nothing silently lost


def test_a_class_with_no_training_example_is_refused_naming_every_such_class():
    images = torch.zeros(4, 3, 4, 4, dtype=torch.uint8)
    train, test = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 2, 2])
    with pytest.raises(HiddenCostError, match=r"^dataset 'x': 2 of 3 classes have no training "
                       r"example: 'b' \(1 test\), 'c' \(2 test\); no method can learn") as err:
        TaskData("x", ["a", "b", "c"], images, train, images, test, 4, 4, "note")
    assert "\n" not in str(err.value)
    # a class with no test example is allowed: it can still be learned
    TaskData("x", ["a", "b"], images, torch.tensor([0, 1, 0, 1]), images, torch.zeros(4).long(),
             4, 4, "note")


def test_effective_shots_count_a_class_with_no_example_and_the_warning_names_it():
    from types import SimpleNamespace

    from hiddencost.run import make_config, training_split

    # the top classes have no training example: inferred from the labels they went uncounted
    task = SimpleNamespace(train_labels=torch.tensor([0, 0, 0, 1, 1, 2]), num_classes=5)
    subset, held = training_split(task, make_config(n_shot=2))
    assert held is None and subset.effective_counts == {0: 2, 1: 2, 2: 1, 3: 0, 4: 0}
    assert subset.warnings() == [
        "2 classes have no training example and cannot be learned: 3, 4 (effective count 0)",
        "3 classes have fewer than 2 training examples and use what they have (effective "
        "counts are recorded)"]
    full = few_shot_indices(task.train_labels, None, seed=0, num_classes=5)
    assert full.warnings() == ["2 classes have no training example and cannot be learned: "
                               "3, 4 (effective count 0)"]


def test_a_class_whose_training_images_are_all_unreadable_is_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from hiddencost.cli import app

    palette = Palette()
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            palette.write(tmp_path / "data" / split / cls / "a.png")
    (tmp_path / "data" / "train" / "dog" / "a.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--dataset", f"imagefolder:{tmp_path / 'data'}", "--skip-unreadable",
        "--method", "lp", "--epochs", "1", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2, result.output
    message = (result.stderr or result.output).strip()
    assert "\n" not in message and "1 of 2 classes have no training example: 'dog' (1 test)" \
        in message
    assert not out.exists()


def test_imagefolder_class_folders_without_images_are_refused(tmp_path):
    palette = Palette()
    for i in range(3):
        palette.write(tmp_path / "pool" / "a" / f"{i}.png")
    (tmp_path / "pool" / "b").mkdir()
    (tmp_path / "pool" / "b" / "notes.txt").write_text("no image here")
    with pytest.raises(HiddenCostError, match=r"class folder\(s\) b of .*pool hold no image "
                       r"file \(\.jpg, .*\): add images or remove the folder") as err:
        load_dataset(f"imagefolder:{tmp_path / 'pool'}", image_size=SMALL)
    assert "\n" not in str(err.value)
    # train/ and test/: a class with test images but an empty training folder, or none at all
    for split in ("train", "test"):
        palette.write(tmp_path / "split" / split / "a" / "0.png")
    palette.write(tmp_path / "split" / "test" / "b" / "0.png")
    with pytest.raises(HiddenCostError, match=r"imagefolder: class folders of .* differ: \['b'\]"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}", image_size=SMALL)
    (tmp_path / "split" / "train" / "b").mkdir()
    with pytest.raises(HiddenCostError, match=r"class folder\(s\) b of .*train hold no image"):
        load_dataset(f"imagefolder:{tmp_path / 'split'}", image_size=SMALL)


def test_a_link_loop_is_walked_once_and_no_file_is_both_trained_on_and_tested(tmp_path):
    palette = Palette()
    for cls in ("a", "b"):
        for i in range(5):
            palette.write(tmp_path / cls / f"{i}.png")
    os.symlink(".", tmp_path / "a" / "loop")  # a/loop/loop/...: class a again at every depth
    os.symlink(tmp_path / "b" / "0.png", tmp_path / "b" / "again.png")  # one file, two paths
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)
    assert (len(task.train_labels), len(task.test_labels)) == (8, 2)
    assert_clean_split(task, palette)  # every file once, train and test disjoint
    # a link to the folder above: class b's files would be class a's too
    os.symlink("..", tmp_path / "a" / "up")
    with pytest.raises(HiddenCostError, match=r"/b/0\.png \(class 'a'\) and .*/b/0\.png "
                       r"\(class 'b'\) are one file, linked from two class folders"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)


def test_a_test_image_linked_to_a_training_image_is_refused(tmp_path):
    palette = Palette()
    for split in ("train", "test"):
        for cls in ("a", "b"):
            palette.write(tmp_path / split / cls / f"{split}.png")
    os.symlink(tmp_path / "train" / "b" / "train.png", tmp_path / "test" / "b" / "copy.png")
    with pytest.raises(HiddenCostError, match=r"1 test image\(s\) are training images too "
                       r"\(e\.g\. .*test/b/copy\.png, a link into .*train\)") as err:
        load_dataset(f"imagefolder:{tmp_path}", image_size=SMALL)
    assert "\n" not in str(err.value)


def test_labels_must_be_whole_class_indices():
    from hiddencost.data.images import decode_dataset
    from hiddencost.data.task import class_labels

    assert class_labels(np.array([0.0, 1.0, 2.0]), "x").tolist() == [0, 1, 2]  # 1.0 is class 1
    assert class_labels([], "x").dtype == torch.int64
    for bad, shown in ((1.5, "1.5"), (float("nan"), "nan"), (float("inf"), "inf")):
        with pytest.raises(HiddenCostError, match=rf"^labels\.csv: the label of row 1 is "
                           rf"{shown}, not a whole class index"):
            class_labels([0, bad], "labels.csv")
    with pytest.raises(HiddenCostError, match="must be class indices"):
        class_labels(["cat", "dog"], "labels.csv")
    # where labels are read: a torchvision-style dataset, and the few-shot sampler
    image = Image.new("RGB", (4, 4))
    with pytest.raises(HiddenCostError, match=r"^decoding x: the label of row 1 is "):
        decode_dataset([(image, 0), (image, 1.5)], 4, "decoding x")
    assert decode_dataset([(image, 0), (image, 1.0)], 4, "decoding x")[1].tolist() == [0, 1]
    with pytest.raises(HiddenCostError, match=r"training labels: the label of row 2 is"):
        few_shot_indices(torch.tensor([0.0, 1.0, 1.5]), 1, seed=0)


@pytest.mark.parametrize(("class_id", "match"), [
    ("1.5", r"cannot read gtsrb under .*: ValueError invalid literal for int\(\) .*'1\.5'"),
    ("99", r"gtsrb: test labels run 0\.\.99, outside its 43 classes 0\.\.42"),
])
def test_a_malformed_label_file_of_a_torchvision_dataset_is_one_line(tmp_path, class_id, match):
    base = tmp_path / "gtsrb"
    palette = Palette()
    palette.write(base / "GTSRB" / "Training" / "00000" / "a.ppm")
    palette.write(base / "GTSRB" / "Final_Test" / "Images" / "b.ppm")
    palette.write(base / "GTSRB" / "Final_Test" / "Images" / "c.ppm")
    (base / "GT-final_test.csv").write_text(f"Filename;ClassId\nb.ppm;0\nc.ppm;{class_id}\n")
    with pytest.raises(HiddenCostError, match=match) as err:
        load_dataset("gtsrb", root=tmp_path, image_size=SMALL)
    assert "\n" not in str(err.value)

"""Write a report into its folder without losing anything: build it in a fresh folder beside
the target, then swap it in.

A report folder holds a manifest (:data:`MANIFEST`) listing every file the report wrote. A new
report replaces exactly those files and never touches anything else:

- the target is missing, or holds nothing but the previous report's files: the fresh folder is
  renamed into place (one rename on the same file system), and the old one deleted after;
- the target also holds files of yours: the new files are moved in one by one (``os.replace``,
  the page last), then the previous report's files that the new one lacks are deleted.

A target that is not empty and has no manifest is refused before any work, and so is a new
file that would overwrite one the previous report did not write. An interrupted report
(Ctrl-C, a crash) deletes its fresh folder and leaves the previous page as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hiddencost.errors import HiddenCostError

#: The file, in a report folder, that lists what the report wrote.
MANIFEST = ".hiddencost-report.json"

T = TypeVar("T")


def _entries(folder: Path) -> tuple[set[str], set[str]]:
    """(files, folders) under ``folder`` as relative POSIX paths; symlinks are files here."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, subdirs, names in os.walk(folder):  # does not follow symlinked folders
        rel = Path(root).relative_to(folder)
        for d in subdirs:
            p = Path(root, d)
            (files if p.is_symlink() else dirs).add((rel / d).as_posix())
        files.update((rel / n).as_posix() for n in names)
    files.discard(MANIFEST)
    return files, dirs


def _manifest(folder: Path) -> set[str] | None:
    """The files a previous report in ``folder`` wrote, or None if it has no readable manifest."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    # only plain relative paths inside the folder count as the report's
    return {f for f in files if f and not Path(f).is_absolute() and ".." not in Path(f).parts}


def _parents(files: set[str]) -> set[str]:
    return {p.as_posix() for f in files for p in Path(f).parents if p != Path(".")}


def check_target(out: Path) -> None:
    """Refuse ``out`` before any work unless it is missing, empty or a report folder."""
    if out.exists() and not out.is_dir():
        raise HiddenCostError(f"report folder {out} is a file; give a folder (it is created if "
                              "missing)")
    if out.is_dir() and any(out.iterdir()) and _manifest(out) is None:
        raise HiddenCostError(
            f"{out} is not empty and was not written by `hiddencost report` (it has no {MANIFEST}"
            "); give a new or empty folder, or remove it, so that nothing of yours is "
            "overwritten")


def _foreign(out: Path, old: set[str]) -> tuple[set[str], set[str]]:
    """(files, folders) in ``out`` that the previous report did not write."""
    files, dirs = _entries(out)
    return files - old, dirs - _parents(old)


def _swap_folder(staging: Path, out: Path) -> bool:
    """Rename ``staging`` into the place of ``out`` (deleted after); False if ``out`` cannot be
    renamed (e.g. a mount point), with nothing changed."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    try:
        os.rename(out, trash / "report")
    except OSError:
        trash.rmdir()
        return False
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(trash / "report", out)  # put the previous report back
        raise
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _move_files(staging: Path, out: Path, new: set[str], old: set[str]) -> None:
    """Move the new report's files into ``out`` one by one, then delete the previous report's
    files (and emptied folders) that the new one lacks."""
    last = ["index.html", MANIFEST]  # so that the page never points at files not yet there
    for rel in sorted(new - set(last)) + last:
        if (staging / rel).exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, out / rel)
    for rel in sorted(old - new):
        (out / rel).unlink(missing_ok=True)
    for rel in sorted(_parents(old) - _parents(new), key=len, reverse=True):
        if (out / rel).is_dir() and not any((out / rel).iterdir()):
            (out / rel).rmdir()
    shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, out: Path) -> None:
    new, _ = _entries(staging)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, out)
        return
    old = _manifest(out) or set()
    files, dirs = _foreign(out, old)
    clash = sorted((new | _parents(new)) & files)
    if clash:
        raise HiddenCostError(f"the report would overwrite {out / clash[0]}, which the previous "
                              "report did not write; move it away or give another folder")
    if files or dirs or not _swap_folder(staging, out):
        _move_files(staging, out, new, old)


@contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` (an absolute path) to build the report in; deleted if the
    build fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        yield staging
    except BaseException:  # Ctrl-C included: the previous report stays as it was
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish(out: Path, build: Callable[[Path], T]) -> T:
    """Run ``build(folder)`` in a fresh folder, record what it wrote in :data:`MANIFEST`, and
    swap it into ``out`` (see the module docstring). Returns what ``build`` returned. ``out``
    is checked by the caller (:func:`check_target`) before any work, not again here."""
    target = Path(os.path.abspath(out))
    with staging_folder(target) as staging:
        result = build(staging)
        files, _ = _entries(staging)
        (staging / MANIFEST).write_text(json.dumps({"files": sorted(files)}, indent=1),
                                        encoding="utf-8")
        _install(staging, target)
    return result

"""The UCI splice-junction task (primate DNA, classes EI / IE / N), StatLog version, offline.

Source: Debian's ``r-cran-mlbench`` ships ``mlbench/data/DNA.rda`` (R's ``data(DNA)``): 3,186
sequences of 60 nucleotides as 180 binary indicator columns (``V1`` … ``V180``) and a ``Class``
column (``ei`` 767, ``ie`` 765, ``n`` 1,654). The StatLog encoding, from the package's own help
page, is three indicators per base::

    A -> 1 0 0      C -> 0 1 0      G -> 0 0 1      T -> 0 0 0

so base j of a sequence is columns 3j+1 … 3j+3. Any other 3-bit group cannot be decoded and is
an error naming the row and the position. The file is read with PyPI ``rdata`` (pure Python,
the ``text`` extra). The task has no official split: :func:`splice_split` is a seeded,
stratified 80/20 split (the same function as the image datasets without one), disjoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiddencost.data.splits import split_note, stratified_split
from hiddencost.errors import HiddenCostError

__all__ = ["SPLICE_CLASSES", "SPLICE_RDA", "SpliceData", "decode_statlog", "read_splice",
           "splice_split"]

#: Where Debian's r-cran-mlbench installs the data.
SPLICE_RDA = Path("/usr/lib/R/site-library/mlbench/data/DNA.rda")
#: The classes, in label order: exon→intron (donor), intron→exon (acceptor), neither.
SPLICE_CLASSES = ("ei", "ie", "n")
#: The bases by the index ``1·b₁ + 2·b₂ + 3·b₃`` of their indicator group (T has none set).
_BASES = "TACG"
SPLICE_TEST_FRACTION = 0.2


def decode_statlog(bits: np.ndarray) -> list[str]:
    """``(N, 3·L)`` 0/1 indicators → N nucleotide strings of length L (see the module's table).

    One vectorised lookup, no loop over positions: each group (b₁, b₂, b₃) with at most one bit
    set maps to ``"TACG"[b₁ + 2·b₂ + 3·b₃]``.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] % 3:
        raise HiddenCostError(f"StatLog DNA indicators must be (N, 3·L), got {bits.shape}")
    if not np.isin(bits, (0, 1)).all():
        raise HiddenCostError("StatLog DNA indicators must be 0 or 1")
    groups = bits.reshape(len(bits), -1, 3).astype(np.int64)
    bad = groups.sum(axis=2) > 1
    if bad.any():
        row, pos = map(int, np.argwhere(bad)[0])
        raise HiddenCostError(f"row {row}, base {pos}: indicators {groups[row, pos].tolist()} "
                              "are none of A=100, C=010, G=001, T=000")
    index = groups @ np.array([1, 2, 3])
    letters = np.array(list(_BASES))[index]
    return ["".join(r) for r in letters]


@dataclass(frozen=True)
class SpliceData:
    """The decoded task: sequences, integer labels indexing :data:`SPLICE_CLASSES`, and where
    it was read from."""

    sequences: list[str]
    labels: np.ndarray
    source: str

    @property
    def class_names(self) -> list[str]:
        return list(SPLICE_CLASSES)


def read_splice(path: str | Path | None = None) -> SpliceData:
    """Read and decode ``DNA.rda`` (default :data:`SPLICE_RDA`); one-line errors when the file
    or the ``rdata`` reader is missing, or the file is not the StatLog DNA table."""
    path = Path(path) if path is not None else SPLICE_RDA
    if not path.is_file():
        raise HiddenCostError(
            f"splice data {path} does not exist: install Debian's r-cran-mlbench "
            "(apt-get install r-cran-mlbench), or pass the folder holding DNA.rda")
    try:
        import rdata  # optional (the text extra): only the splice task needs it
    except ImportError:
        raise HiddenCostError("reading DNA.rda needs rdata: pip install 'hiddencost[text]'"
                              ) from None
    try:
        with warnings.catch_warnings():  # rdata warns once per string column of an old file
            warnings.filterwarnings("ignore", "Unknown encoding", UserWarning)
            table = rdata.read_rda(str(path))["DNA"]
    except Exception as exc:  # any parse failure of a foreign file: one line
        raise HiddenCostError(f"{path} is not R's mlbench DNA data: {exc}") from None
    columns = [f"V{i}" for i in range(1, 181)]
    if list(table.columns) != [*columns, "Class"]:
        raise HiddenCostError(f"{path}: expected columns V1…V180 and Class")
    bits = table[columns].astype(int).to_numpy()
    names = [str(c) for c in table["Class"]]
    unknown = sorted(set(names) - set(SPLICE_CLASSES))
    if unknown:
        raise HiddenCostError(f"{path}: unknown classes {unknown}")
    labels = np.array([SPLICE_CLASSES.index(c) for c in names], dtype=np.int64)
    return SpliceData(decode_statlog(bits), labels, str(path))


def splice_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Seeded stratified 80/20 (train, test) indices of the task and the split's note."""
    train, test = stratified_split(labels, SPLICE_TEST_FRACTION, seed)
    return train, test, split_note("UCI splice junctions (StatLog)", SPLICE_TEST_FRACTION, seed)

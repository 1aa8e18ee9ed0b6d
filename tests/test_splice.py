"""The splice-junction DNA task (issue "Cross-modal", first part): StatLog decoding by hand, its
refusals, and the real file from Debian's r-cran-mlbench when it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from hiddencost.data.splice import SPLICE_RDA, decode_statlog, read_splice, splice_split
from hiddencost.errors import HiddenCostError


def test_statlog_indicators_decode_by_hand():
    # A=100, C=010, G=001, T=000 (the mlbench help page), three columns per base, in order
    bits = np.array([[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0],
                     [0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0]])
    assert decode_statlog(bits) == ["ACGT", "TGCA"]


@pytest.mark.parametrize("bits, match", [
    (np.array([[1, 1, 0]]), r"row 0, base 0: indicators \[1, 1, 0\] are none of"),
    (np.array([[0, 0, 0, 0, 1, 1]]), r"row 0, base 1"),
    (np.array([[0, 2, 0]]), "must be 0 or 1"),
    (np.array([[0, 1]]), r"must be \(N, 3·L\)"),
])
def test_groups_that_are_no_base_are_refused(bits, match):
    with pytest.raises(HiddenCostError, match=match):
        decode_statlog(bits)


def test_a_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(HiddenCostError, match="apt-get install r-cran-mlbench"):
        read_splice(tmp_path / "DNA.rda")


@pytest.mark.skipif(not SPLICE_RDA.is_file(),
                    reason=f"{SPLICE_RDA} is absent: install Debian's r-cran-mlbench "
                           "(`make test` does where apt works)")
def test_the_real_statlog_file():
    pytest.importorskip("rdata", reason="rdata is absent: pip install 'hiddencost[text]'")
    data = read_splice()
    assert len(data.sequences) == 3186 and {len(s) for s in data.sequences} == {60}
    assert np.bincount(data.labels).tolist() == [767, 765, 1654]  # ei, ie, n
    # row 1's first nine indicators in R are 0 1 0 | 0 0 0 | 1 0 0: C, T, A
    assert data.sequences[0][:3] == "CTA"
    assert set("".join(data.sequences)) == set("ACGT")
    train, test, note = splice_split(data.labels, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == 3186
    assert abs(len(test) - 0.2 * 3186) <= 1 and "seeded stratified 80%/20%" in note
    for k in range(3):  # every class keeps its share in the test split
        share = (data.labels[test] == k).mean() - (data.labels == k).mean()
        assert abs(share) < 0.01

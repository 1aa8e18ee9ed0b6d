"""The closed set of compression-level units: severity, label and axis label of each, against
hand-computed values."""

from __future__ import annotations

import math

import pytest

from hiddencost.compression.levels import LevelUnit

#: unit → (level, severity, label, axis label), computed by hand from the table in
#: hiddencost.compression.levels.
CASES = {
    LevelUnit.SPARSITY: (0.9, 0.9, "90% sparse", "sparsity (% of weights zeroed)"),
    LevelUnit.SPARSITY_PERCENT: (90, 0.9, "90% sparse", "sparsity (% of weights zeroed)"),
    LevelUnit.REMAINING_PERCENT: (11.571, 1 - 0.11571, "11.571% remaining",
                                  "weights remaining (%)"),
    LevelUnit.BITS: (4, 1 - 4 / 32, "4-bit", "bit-width (bits)"),
    LevelUnit.COMPRESSION_RATIO: (4, 1 - 1 / 4, "4× smaller", "compression ratio (×)"),
    LevelUnit.RANK_RATIO: (0.25, 0.75, "rank 25%", "rank kept (% of full rank)"),
    LevelUnit.LEVEL: (3, 3.0, "3", "compression level (level)"),
    LevelUnit.VARIANT: ("moderate", math.nan, "moderate", "compression level (variant)"),
}


def test_every_unit_has_a_case():
    assert set(CASES) == set(LevelUnit)
    assert [u.value for u in LevelUnit] == ["sparsity", "sparsity_percent", "remaining_percent",
                                            "bits", "compression_ratio", "rank_ratio", "level",
                                            "variant"]


@pytest.mark.parametrize("unit", list(LevelUnit))
def test_severity_label_and_axis(unit):
    level, severity, label, axis = CASES[unit]
    got = unit.severity(level)
    assert math.isnan(got) if math.isnan(severity) else got == pytest.approx(severity)
    assert unit.label(level) == label
    assert unit.axis_label == axis


@pytest.mark.parametrize("unit", list(LevelUnit))
def test_a_level_that_is_not_a_number(unit):
    assert math.isnan(unit.severity("high")) and math.isnan(unit.severity(None))
    assert unit.label("high") == "high"


def test_severity_orders_levels_within_a_unit():
    assert LevelUnit.SPARSITY.severity(0.5) < LevelUnit.SPARSITY.severity(0.9)
    assert LevelUnit.BITS.severity(8) < LevelUnit.BITS.severity(4) < LevelUnit.BITS.severity(2)
    r = LevelUnit.REMAINING_PERCENT
    assert r.severity(79.1) < r.severity(11.5)  # fewer weights left = more compressed
    assert LevelUnit.SPARSITY_PERCENT.severity(90) == pytest.approx(
        LevelUnit.SPARSITY.severity(0.9))
    assert LevelUnit.BITS.severity(32) == 0.0  # 32-bit float = dense
    ratio = LevelUnit.COMPRESSION_RATIO
    assert ratio.severity(1) == 0.0 and ratio.label(1) == "uncompressed"  # UPop's dense file
    assert ratio.severity(1) < ratio.severity(2) < ratio.severity(4)

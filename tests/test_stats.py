"""Intervals over seeds (avpet_core.stats): the arithmetic every training chapter's claims rest on."""

from __future__ import annotations

import math

import pytest

from avpet_core.stats import Interval, binomial_standard_error, mean_interval, paired_difference, t_quantile_975


def test_mean_interval_matches_the_t_formula():
    values = [0.60, 0.64, 0.65]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    interval = mean_interval(values)
    assert interval.mean == pytest.approx(mean)
    assert interval.half_width == pytest.approx(4.303 * sd / math.sqrt(3))
    assert interval.n == 3 and interval.contains(mean)


def test_t_quantiles_are_conservative_between_table_entries():
    assert t_quantile_975(2) == 4.303
    assert t_quantile_975(22) == t_quantile_975(20) > 2.074  # the exact quantile for df 22
    assert t_quantile_975(10_000) == 1.980
    with pytest.raises(ValueError, match="at least 2 values"):
        t_quantile_975(0)


def test_one_value_has_no_interval():
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_interval([0.5])


def test_pairing_removes_the_shared_seed_effect():
    """Rows that swing together with the seed: unpaired intervals overlap, the paired one does not."""
    baseline = [0.60, 0.66, 0.63]
    adapted = [b + 0.02 + e for b, e in zip(baseline, (0.002, -0.001, 0.0))]
    assert mean_interval(adapted).low < mean_interval(baseline).high  # the rows' own intervals overlap
    gain = paired_difference(adapted, baseline)
    assert gain.above(0) and not gain.below(0)
    assert gain.mean == pytest.approx(0.02 + 0.001 / 3)


def test_not_separated_is_neither_above_nor_below():
    gain = paired_difference([0.61, 0.65, 0.60], [0.62, 0.62, 0.62])
    assert not gain.above(0) and not gain.below(0) and gain.contains(0)


def test_paired_difference_needs_pairs():
    with pytest.raises(ValueError, match="same length"):
        paired_difference([0.1, 0.2], [0.1])


def test_format():
    assert Interval(0.684, 0.672, 0.696, 3).format() == "68.4 ± 1.2"
    assert Interval(0.02, 0.01, 0.03, 3).format(signed=True) == "+2.0 ± 1.0"
    assert Interval(0.5, 0.4, 0.6, 3).format(scale=1, digits=3) == "0.500 ± 0.100"


def test_binomial_standard_error():
    assert binomial_standard_error(0.5, 4000) == pytest.approx(math.sqrt(0.25 / 4000))
    assert binomial_standard_error(1.0, 10) == 0.0

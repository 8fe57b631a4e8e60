"""Intervals over seeds (avpet_core.stats): the arithmetic every training chapter's claims rest on."""

from __future__ import annotations

import math

import pytest

from avpet_core import stats
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


def test_verdict_says_where_the_interval_lies():
    assert stats.verdict(stats.mean_interval([0.1, 0.12, 0.11])) == "above 0"
    assert stats.verdict(stats.mean_interval([-0.1, -0.12, -0.11])) == "below 0"
    assert stats.verdict(stats.mean_interval([-0.1, 0.1, 0.0])) == "not separated"


def test_seed_frame_one_metric():
    rows = {"none": {0: 0.70, 1: 0.72, 2: 0.71}, "both": {0: 0.75, 1: 0.76, 2: 0.74}, "one": {0: 0.5}}
    frame = stats.seed_frame(
        rows,
        paper={"none": 72.01, "both": 75.65},
        baseline="none",
        pairs=[("both", "one")],
        references={"background": 0.6},
        compared=["both"],
        title="acc (%)",
    )
    assert list(frame.columns) == ["seed 0", "seed 1", "seed 2", "mean ± 95%", "paper", "verdict"]
    assert frame.loc[("acc (%)", "both"), "mean ± 95%"] == stats.mean_interval([0.75, 0.76, 0.74]).format()
    gain = frame.loc[("minus none", "both")]
    assert gain["seed 0"] == "+5.0" and gain["paper"] == "+3.64" and gain["verdict"] == "above 0"
    assert frame.loc[("acc (%)", "one"), "mean ± 95%"] == "-"  # one seed: no interval
    assert frame.loc[("paired", "both - one"), "verdict"] == "-"  # one shared seed: nothing to judge
    assert frame.loc[("data only", "background"), "mean ± 95%"] == "60.0"
    assert frame.loc[("minus background", "both"), "verdict"] == "above 0"
    assert ("minus background", "none") not in frame.index  # only the compared rows


def test_seed_frame_several_metrics_and_missing_values():
    rows = {
        "a": {0: {"x": 0.4, "y": 0.5}, 1: {"x": 0.42, "y": None}},
        "b": {0: {"x": 0.5, "y": 0.6}, 1: {"x": 0.52, "y": 0.6}},
    }
    frame = stats.seed_frame(rows, metrics=[("X", "x"), ("Y", "y")], paper={"b": {"x": 70.0}}, baseline="a")
    assert list(frame.columns) == ["X", "Y"]
    assert frame.loc[("rows", "a", "seed 1"), "Y"] == "-" and frame.loc[("rows", "a", "mean ± 95%"), "Y"] == "-"
    assert frame.loc[("rows", "b", "paper"), "X"] == "70.00" and frame.loc[("rows", "b", "paper"), "Y"] == "-"
    assert frame.loc[("minus a", "b", "verdict"), "X"] == "above 0"
    assert frame.loc[("minus a", "b", "verdict"), "Y"] == "-"


def test_seed_frame_names_a_pair():
    rows = {"a": {0: 0.5, 1: 0.6}, "b": {0: 0.4, 1: 0.45}}
    frame = stats.seed_frame(rows, pairs=[("a", "b", "a drop")], title="t")
    assert ("paired", "a drop") in frame.index


def test_detectable_difference_is_the_gain_separated_with_that_probability():
    """Monte Carlo: paired studies whose true gain is the detectable difference separate it from zero
    (the 95% interval of mean_interval) in about 80% of draws; a larger gain more often."""
    import numpy as np

    observed = [1.0, -1.0, 2.0, 0.0, 1.0, -2.0, 0.5, 1.5, -0.5, 0.0]
    sd = float(np.std(observed, ddof=1))
    delta = stats.detectable_difference(observed, power=0.8)
    half = stats.t_quantile_975(9) * sd / np.sqrt(10)
    assert half < delta < 2 * half  # beyond the interval's reach, by about t_0.8 standard errors
    draws = np.random.default_rng(0).normal(delta, sd, size=(20_000, 10))
    t = draws.mean(1) / (draws.std(1, ddof=1) / np.sqrt(10))
    assert abs((np.abs(t) > stats.t_quantile_975(9)).mean() - 0.8) < 0.015
    assert stats.detectable_difference(observed, power=0.95) > delta
    assert stats.detectable_difference([0.5, 0.5, 0.5]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        stats.detectable_difference([1.0])


def test_seed_frame_prints_a_power_statement_for_differences_not_separated():
    rows = {"a": {0: 0.70, 1: 0.72, 2: 0.71}, "b": {0: 0.69, 1: 0.73, 2: 0.70}, "c": {0: 0.80, 1: 0.83, 2: 0.81}}
    frame = stats.seed_frame(rows, baseline="b", power=0.8)
    column = frame["detectable (80%)"]
    gain = [rows["a"][s] - rows["b"][s] for s in range(3)]
    assert column[("minus b", "a")] == f"±{100 * stats.detectable_difference(gain):.1f}"
    assert column[("minus b", "c")] == ""  # separated: nothing to bound
    assert "detectable (80%)" not in stats.seed_frame(rows, baseline="b").columns

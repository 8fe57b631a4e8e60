"""Intervals over seeds: what a chapter may claim about a table.

A trained row is a random variable of its seed (initialisation, batch order, dropout). A chapter
therefore trains each row with several seeds, prints the mean with a 95% Student-t interval,
and, where two rows share a seed and the data, the *paired* difference — row minus baseline, seed
by seed — whose interval is much narrower than the two rows' own, because the shared seed and data
cancel. A claim such as "adapters in both streams beat the frozen model" is asserted only when
the paired interval excludes zero (:meth:`Interval.above`); otherwise the chapter prints it and
says "not separated at this budget". :func:`seed_frame` puts a whole seed study in one table (each
seed, the mean ± 95% interval, the paper, paired differences with their :func:`verdict`); the
claims a chapter asserts are tested by :mod:`avpet_core.verification`.

    >>> gain = paired_difference([0.70, 0.72, 0.71], [0.65, 0.66, 0.66])
    >>> gain.above(0.0)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import pandas

# Two-sided 95% quantiles of Student's t (the 0.975 quantile) by degrees of freedom.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom, from a table; between two
    tabulated values the smaller df's (a slightly wider interval than the exact one, never narrower)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 values (df >= 1), got df = {df}")
    return _T975[max(d for d in _T975 if d <= df)]


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a 95% Student-t interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def above(self, value: float) -> bool:
        """Whether the whole interval lies above ``value`` (the claim "greater than value" is separated)."""
        return self.low > value

    def below(self, value: float) -> bool:
        """Whether the whole interval lies below ``value``."""
        return self.high < value

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
        """``"68.4 ± 1.2"`` (values times ``scale``); ``signed`` prints ``+`` on positive means."""
        sign = "+" if signed else ""
        return f"{self.mean * scale:{sign}.{digits}f} ± {self.half_width * scale:.{digits}f}"


def _mean_sd(values: Sequence[float], needs: str) -> tuple[float, float, int]:
    """``(mean, sample standard deviation, n)`` of at least two values (``needs`` names who asks)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"{needs} needs at least 2 values, got {n}")
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), n


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t interval of independent values (e.g. one per seed)."""
    mean, sd, n = _mean_sd(values, "an interval")
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> Interval:
    """Interval of ``values[i] - baseline[i]`` over pairs that share a seed and the data."""
    if len(values) != len(baseline):
        raise ValueError(f"paired values need the same length, got {len(values)} and {len(baseline)}")
    return mean_interval([float(v) - float(b) for v, b in zip(values, baseline)])


def detectable_difference(differences: Sequence[float], power: float = 0.8) -> float:
    """The power statement of a paired study: the smallest true mean difference that ``len(differences)``
    paired seeds at their observed spread would separate from zero (:func:`verdict`, the two-sided 95%
    interval of :func:`mean_interval`) with probability ``power``.

    The studentised mean of ``n`` paired differences with true mean ``delta`` and standard deviation
    ``sd`` follows a noncentral t with ``n - 1`` degrees of freedom and noncentrality
    ``delta * sqrt(n) / sd``; the answer is the ``delta`` at which it exceeds the interval's quantile
    (in either direction) with probability ``power`` (``scipy.stats.nct``). The observed ``sd`` stands in
    for the true one, as it does in the interval. A difference smaller than this may well exist; the
    study could not have been expected to see it.
    """
    from scipy import optimize, stats as scipy_stats

    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    _, sd, n = _mean_sd(differences, "a power statement")
    if sd == 0:
        return 0.0
    df, critical = n - 1, t_quantile_975(n - 1)

    def shortfall(delta: float) -> float:
        noncentrality = delta * math.sqrt(n) / sd
        wrong_side = scipy_stats.nct.cdf(-critical, df, noncentrality)  # NaN where it underflows: 0
        return scipy_stats.nct.sf(critical, df, noncentrality) + (0.0 if math.isnan(wrong_side) else wrong_side) - power

    return float(optimize.brentq(shortfall, 0.0, 20.0 * sd / math.sqrt(n)))  # noncentrality 20: certain


def binomial_standard_error(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent items: the evaluation's own noise."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def verdict(interval: Interval) -> str:
    """What a difference's 95% interval says about zero: ``"above 0"``, ``"below 0"`` or ``"not separated"``."""
    return "above 0" if interval.above(0.0) else "below 0" if interval.below(0.0) else "not separated"


def _difference_interval(values: Sequence[float | None], baseline: Sequence[float | None]) -> Interval | None:
    pairs = [(v, b) for v, b in zip(values, baseline) if v is not None and b is not None]
    if len(pairs) < 2 or len(pairs) < len(values):
        return None
    return paired_difference([v for v, _ in pairs], [b for _, b in pairs])


def seed_frame(
    rows: Mapping[str, Mapping[int, float | Mapping[str, float | None]]],
    *,
    metrics: Sequence[tuple[str, str]] | None = None,
    paper: Mapping[str, object] | None = None,
    baseline: str | None = None,
    pairs: Sequence[tuple[str, ...]] = (),
    references: Mapping[str, object] | None = None,
    compared: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    title: str = "value",
    seeds_shown: bool = True,
    scale: float = 100.0,
    digits: int = 1,
    power: float | None = None,
) -> "pandas.DataFrame":
    """A seed study as one table: every row's seeds, their mean ± 95% interval and the paper's number;
    then each row minus ``baseline`` and each ``(a, b)`` of ``pairs``, paired seed by seed, and each row
    minus each of ``references`` (data-only values such as the majority answer; only the rows named in
    ``compared``, if given), each difference with
    the paper's difference and a verdict (:func:`verdict`: does its 95% interval exclude zero?).

    One metric: ``rows[name][seed]`` is a number, ``paper[name]`` a number (in %, or ``None``) and
    ``references[name]`` a number; the table has one line per row and difference (index: group,
    row) and the columns ``seed ...``, ``mean ± 95%``, ``paper``, ``verdict``.

    Several metrics (``metrics``: ``(column label, key)`` pairs, e.g. Table 2's groups):
    ``rows[name][seed][key]``, ``paper[name]`` and ``references[name]`` are mappings by key; the table
    has one column per metric and, per row, a line per seed, ``mean ± 95%``, ``paper`` and, for
    differences, ``verdict`` (index: group, row, line). ``seeds_shown=False`` keeps the means only.

    Values are printed times ``scale`` with ``digits`` decimals; paper values as they are. A value
    of ``None`` (no question of that type) prints ``-``. ``labels`` names the rows (default: their
    names); a pair ``(a, b, label)`` names its difference (default ``"a - b"``). Display it (a
    notebook shows the HTML table) or print ``frame.to_string()``.

    ``power`` (e.g. ``0.8``) adds a power statement to every difference that is not separated: the
    column (one metric) or line (several) ``detectable (80%)``, the smallest true difference this many
    seeds at this spread would have separated with that probability (:func:`detectable_difference`).
    """
    import pandas as pd

    single = metrics is None
    if single:
        metrics = [(title, title)]
        rows = {name: {seed: {title: value} for seed, value in by_seed.items()} for name, by_seed in rows.items()}
        paper = {name: {title: value} for name, value in (paper or {}).items()}
        references = {name: {title: value} for name, value in (references or {}).items()}
    paper, references, labels = dict(paper or {}), dict(references or {}), dict(labels or {})
    keys = [key for _, key in metrics]
    seeds = sorted({seed for by_seed in rows.values() for seed in by_seed})
    records: list[dict] = []

    def label(name: str) -> str:
        return labels.get(name, name)

    def cell(value, signed: bool = False):
        return "-" if value is None else f"{value * scale:{'+' if signed else ''}.{digits}f}"

    def block(
        group: str,
        row: str,
        per_seed: Mapping[int, Mapping[str, float | None]],
        intervals: Mapping[str, Interval | None],
        paper_values: Mapping[str, float | None] | None,
        judged: bool,
        signed: bool,
    ) -> None:
        lines: dict[str, dict] = {}
        if seeds_shown or single:
            for seed in seeds:
                lines[f"seed {seed}"] = {
                    k: cell(per_seed[seed].get(k), signed) if seed in per_seed else "-" for k in keys
                }
        lines["mean ± 95%"] = {
            k: intervals[k].format(scale, digits, signed=signed) if intervals[k] is not None else "-" for k in keys
        }
        if paper_values is not None:
            lines["paper"] = {
                k: "-" if paper_values.get(k) is None else f"{paper_values[k]:{'+' if signed else ''}.2f}" for k in keys
            }
        if judged:
            lines["verdict"] = {k: verdict(intervals[k]) if intervals[k] is not None else "-" for k in keys}
        if judged and power is not None:
            lines[detectable] = {k: power_statement(per_seed, k, intervals[k]) for k in keys}
        for line, values in lines.items():
            records.append({"group": group, "row": row, "line": line, **values})

    detectable = f"detectable ({100 * power:.0f}%)" if power is not None else ""

    def power_statement(per_seed, key, interval: Interval | None) -> str:
        if interval is None or verdict(interval) != "not separated":
            return ""
        return f"±{detectable_difference([v[key] for v in per_seed.values()], power) * scale:.{digits}f}"

    def own_interval(by_seed, key) -> Interval | None:
        values = [v.get(key) for v in by_seed.values()]
        return mean_interval(values) if len(values) > 1 and None not in values else None

    def paper_difference(a: str, b: str) -> dict[str, float | None]:
        pa, pb = paper.get(a, {}), paper.get(b, {})
        return {k: None if pa.get(k) is None or pb.get(k) is None else pa[k] - pb[k] for k in keys}

    def paired(group: str, row: str, a: str, b: str) -> None:
        shared = [s for s in rows[a] if s in rows[b]]
        per_seed = {
            s: {
                k: None if rows[a][s].get(k) is None or rows[b][s].get(k) is None else rows[a][s][k] - rows[b][s][k]
                for k in keys
            }
            for s in shared
        }
        intervals = {
            k: _difference_interval([rows[a][s].get(k) for s in shared], [rows[b][s].get(k) for s in shared])
            for k in keys
        }
        block(group, row, per_seed, intervals, paper_difference(a, b) if paper else None, True, True)

    title_group = title if single else "rows"
    for name, by_seed in rows.items():
        block(
            title_group,
            label(name),
            by_seed,
            {k: own_interval(by_seed, k) for k in keys},
            paper.get(name, {}) if paper else None,
            False,
            False,
        )
    for name, values in references.items():
        line = "mean ± 95%" if single else "value"  # one value, no interval
        records.append({"group": "data only", "row": name, "line": line, **{k: cell(values.get(k)) for k in keys}})
    if baseline is not None:
        for name in rows:
            if name != baseline:
                paired(f"minus {label(baseline)}", label(name), name, baseline)
    for pair in pairs:
        a, b = pair[0], pair[1]
        paired("paired", pair[2] if len(pair) > 2 else f"{label(a)} - {label(b)}", a, b)
    for reference, values in references.items():
        for name, by_seed in rows.items():
            if compared is not None and name not in compared:
                continue
            per_seed = {
                s: {k: None if v.get(k) is None or values.get(k) is None else v[k] - values[k] for k in keys}
                for s, v in by_seed.items()
            }
            intervals = {k: own_interval(per_seed, k) for k in keys}
            block(f"minus {reference}", label(name), per_seed, intervals, None, True, True)
    frame = pd.DataFrame(records)
    if single:
        wide = frame.pivot_table(index=["group", "row"], columns="line", values=title, aggfunc="first", sort=False)
        shown = [*(f"seed {s}" for s in seeds), "mean ± 95%", "paper", "verdict", detectable]
        columns = [c for c in shown if c and c in wide.columns]
        wide = wide[columns].fillna("")
        wide.columns.name = None
        return wide
    frame = frame.set_index(["group", "row", "line"])
    frame.columns = [label_ for label_, _ in metrics]
    return frame

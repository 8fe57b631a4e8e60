"""Intervals over seeds: what a chapter may claim about a table.

A trained row is a random variable of its seed (initialisation, batch order, dropout). A chapter
therefore trains each row with several seeds, prints the mean with a 95% Student-t interval,
and, where two rows share a seed and the data, the *paired* difference — row minus baseline, seed
by seed — whose interval is much narrower than the two rows' own, because the shared seed and data
cancel. A claim such as "adapters in both streams beat the frozen model" is asserted only when
the paired interval excludes zero (:meth:`Interval.above`); otherwise the chapter prints it and
says "not separated at this budget".

    >>> gain = paired_difference([0.70, 0.72, 0.71], [0.65, 0.66, 0.66])
    >>> gain.above(0.0)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Two-sided 95% quantiles of Student's t (the 0.975 quantile) by degrees of freedom.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


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


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and 95% t interval of independent values (e.g. one per seed)."""
    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(values: Sequence[float], baseline: Sequence[float]) -> Interval:
    """Interval of ``values[i] - baseline[i]`` over pairs that share a seed and the data."""
    if len(values) != len(baseline):
        raise ValueError(f"paired values need the same length, got {len(values)} and {len(baseline)}")
    return mean_interval([float(v) - float(b) for v, b in zip(values, baseline)])


def binomial_standard_error(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent items: the evaluation's own noise."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def seed_table_lines(rows: dict[str, dict[int, float]], *, baseline: str | None = None, label_width: int = 40,
                     scale: float = 100.0) -> list[str]:
    """A row per name: each seed's value, then the mean ± 95% interval (two seeds or more), and, when
    ``baseline`` names a row, the paired difference over the seeds the two rows share.

    ``rows[name][seed]`` is one run's value (an accuracy in ``[0, 1]``, printed times ``scale``).
    A row with one seed prints its value and ``"one seed"``: it is shown, not compared.
    """
    seeds = sorted({seed for values in rows.values() for seed in values})
    header = f"{'':{label_width}}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds) + f"{'mean ± 95%':>15}"
    if baseline is not None:
        header += f"{'minus ' + baseline:>22}"
    lines = [header]
    for name, values in rows.items():
        cells = "".join(f"{values[s] * scale:9.1f}" if s in values else f"{'-':>9}" for s in seeds)
        span = mean_interval(list(values.values())).format(scale) if len(values) > 1 else "one seed"
        line = f"{name:{label_width}}{cells}{span:>15}"
        if baseline is not None and name != baseline:
            shared = [s for s in values if s in rows[baseline]]
            if len(shared) > 1:
                gain = paired_difference([values[s] for s in shared], [rows[baseline][s] for s in shared])
                line += f"{gain.format(scale, signed=True):>22}"
        lines.append(line)
    return lines

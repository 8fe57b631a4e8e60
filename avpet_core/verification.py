"""Does a new run reproduce the book? Each training chapter checks its seed study against a reference.

A training chapter (5-9) trains its rows over several seeds: a :class:`SeedStudy` holds each row's
metrics per seed. :func:`verify` compares it with the chapter's **reference run**, a readable JSON file
in ``avpet_core/references/`` that the same function wrote when the book was made (``make book``,
under the pins), and tests the chapter's :class:`Claim` s on the new run's own values. It prints which
mode ran and why:

* **exact**: the reference was made in this numeric environment (the same weight fingerprint,
  :func:`avpet_core.fingerprint.weights_fingerprint`), with the same settings and seeds. Training is
  deterministic there, so every value must equal the reference's bit for bit; any difference means the
  code or the environment changed.
* **statistical**: the settings are the reference's but the environment or the seeds are not (another
  CPU vendor, another ATen capability, the robustness seeds). Training turns last-bit differences into
  a new draw of every seed's result, so the last digits cannot be compared. Instead each metric's
  per-seed values are compared with the reference's by Welch's two-sample t test (two-sided; spreads
  below :attr:`SeedStudy.resolution` are raised to it, since a spread under the evaluation's own
  resolution is no evidence of a difference). The metrics of one chapter are corrected together by
  Holm's step-down method at :data:`CONSISTENCY_LEVEL`, so a healthy run raises a false alarm in one
  chapter with probability at most 0.2%, and anywhere in the :data:`TRAINING_CHAPTERS` training
  chapters with probability at most :data:`BOOK_FALSE_ALARM` (1%).
* **claims only**: there is no reference for these settings (another backbone, the real data set,
  another budget): nothing to compare with, and only the claims are tested.

In every mode each claim is a one-sided one-sample t test on per-seed values (paired differences
where two rows share a seed and the data), and a chapter's claims are corrected together by Holm's
method at :data:`CLAIM_LEVEL` (5% family-wise: the chance that any claim the chapter asserts is
false). A claim that is not separated fails the check. A chapter claims only what survives a change of
seed and of machine; what its tables show beyond that is printed with 95% intervals and called "not
separated". Printed tables always come from the run in the kernel, never from the reference file.

    >>> study = SeedStudy("demo", {"epochs": 1}, {"row accuracy": {0: 0.71, 1: 0.74, 2: 0.72}})
    >>> claim = Claim.above("row beats chance", [0.71, 0.74, 0.72], 0.5)
    >>> round(claim.p_value(), 4)
    0.0008
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping, Sequence

REFERENCE_DIR = Path(__file__).resolve().parent / "references"
"""Where the chapters' reference runs live (package data: Colab's install has them too)."""

WRITE_ENV_VAR = "AVPET_WRITE_REFERENCE"
"""Set to 1 (``make book`` does) to let :func:`verify` write the reference file of a pinned run."""

BOOK_FALSE_ALARM = 0.01
"""The chance that a healthy run, in another numeric environment, fails any statistical check of the book."""

TRAINING_CHAPTERS = 5
"""Chapters with a reference run (5-9); :data:`BOOK_FALSE_ALARM` is shared among them (Bonferroni)."""

CONSISTENCY_LEVEL = BOOK_FALSE_ALARM / TRAINING_CHAPTERS
"""Family-wise level of one chapter's consistency tests (Holm over its metrics): 0.2%."""

CLAIM_LEVEL = 0.05
"""Family-wise level of one chapter's claims (Holm over them): the chance that any is falsely separated."""

DEFAULT_RESOLUTION = 0.005
"""Smallest per-seed spread a consistency test assumes (half a point of accuracy)."""


class VerificationError(AssertionError):
    """A chapter's run does not reproduce its reference, or an asserted claim is not separated."""


class ReferenceFileError(ValueError):
    """A reference file that cannot be read: the message names the file (and line) and what is wrong."""


# ---------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """ "The mean of ``values`` is above (or below) ``threshold``", tested over seeds; every claim a
    chapter passes to :func:`verify` is asserted.

    ``values`` are one number per seed: a row's metric, or a paired difference (:meth:`paired`).
    :meth:`every` joins claims into one: "each of these holds".
    """

    statement: str
    values: tuple[float, ...] = ()
    threshold: float = 0.0
    direction: Literal["greater", "less"] = "greater"
    parts: tuple["Claim", ...] = ()

    def __post_init__(self):
        if self.parts:
            return
        if self.direction not in ("greater", "less"):
            raise ValueError(f"claim {self.statement!r}: direction must be 'greater' or 'less', got {self.direction!r}")
        if len(self.values) < 2:
            raise ValueError(
                f"claim {self.statement!r}: a claim over seeds needs two values or more, got {len(self.values)}"
            )

    @classmethod
    def above(cls, statement: str, values: Sequence[float] | Mapping[int, float], threshold: float = 0.0) -> "Claim":
        return cls(statement, _as_tuple(values), float(threshold), "greater")

    @classmethod
    def below(cls, statement: str, values: Sequence[float] | Mapping[int, float], threshold: float = 0.0) -> "Claim":
        return cls(statement, _as_tuple(values), float(threshold), "less")

    @classmethod
    def paired(
        cls,
        statement: str,
        values: Mapping[int, float] | Sequence[float],
        baseline: Mapping[int, float] | Sequence[float],
        direction: Literal["greater", "less"] = "greater",
    ) -> "Claim":
        """``values - baseline > 0`` (or ``< 0``) seed by seed; mappings are aligned on the seeds they share."""
        if isinstance(values, Mapping) and isinstance(baseline, Mapping):
            differences = [values[s] - baseline[s] for s in values if s in baseline]
        else:
            values, baseline = _as_tuple(values), _as_tuple(baseline)
            if len(values) != len(baseline):
                raise ValueError(
                    f"claim {statement!r}: paired values need the same length, got {len(values)} and {len(baseline)}"
                )
            differences = [v - b for v, b in zip(values, baseline)]
        return cls(statement, _as_tuple(differences), 0.0, direction)

    @classmethod
    def every(cls, statement: str, parts: Sequence["Claim"]) -> "Claim":
        """ "Each of ``parts`` holds", as one claim: an intersection-union test, separated when every part
        is separated at the claim's level, so its p value is the largest of the parts' (no correction is
        needed among the parts: the claim is false if any part is, and each part alone keeps the level)."""
        if not parts:
            raise ValueError(f"claim {statement!r}: 'every' needs at least one part")
        return cls(statement, parts=tuple(parts))

    @property
    def mean(self) -> float:
        """The mean over seeds; for :meth:`every`, the mean of the part with the largest p value."""
        if self.parts:
            return max(self.parts, key=lambda part: part.p_value()).mean
        return sum(self.values) / len(self.values)

    @property
    def seeds(self) -> int:
        return min(len(part.values) for part in self.parts) if self.parts else len(self.values)

    def describe_test(self) -> str:
        if self.parts:
            return f"all {len(self.parts)} parts"
        return f"{'>' if self.direction == 'greater' else '<'} {self.threshold:.4g}"

    def p_value(self) -> float:
        """One-sided p value of the one-sample t test of the mean against ``threshold`` (for
        :meth:`every`, the largest of the parts')."""
        from scipy import stats

        if self.parts:
            return max(part.p_value() for part in self.parts)
        if _sd(self.values) == 0.0:  # no spread: the t statistic is infinite, or undefined at the threshold
            side = self.mean - self.threshold if self.direction == "greater" else self.threshold - self.mean
            return 0.0 if side > 0 else 1.0
        return float(stats.ttest_1samp(self.values, self.threshold, alternative=self.direction).pvalue)

    def weakest(self) -> str:
        """For :meth:`every`, the statement of the part with the largest p value; else the claim's own."""
        return max(self.parts, key=lambda part: part.p_value()).statement if self.parts else self.statement


def holm(p_values: Mapping[str, float], level: float) -> dict[str, tuple[float, bool]]:
    """Holm's step-down correction: ``{name: (threshold, rejected)}``.

    The smallest p value is compared with ``level / m``, the next with ``level / (m - 1)``, and so on;
    the first that misses its threshold stops the procedure, and it and every larger one stay not
    rejected. The chance of rejecting any true null hypothesis is at most ``level``.
    """
    order = sorted(p_values, key=lambda name: p_values[name])
    result, going = {}, True
    for i, name in enumerate(order):
        threshold = level / (len(order) - i)
        going = going and p_values[name] <= threshold
        result[name] = (threshold, going)
    return result


def welch_p_value(ours: Sequence[float], reference: Sequence[float], resolution: float = 0.0) -> float:
    """Two-sided p value of Welch's t test for equal means, each sample's spread raised to ``resolution``.

    With the raised spreads the statistic is Welch's, with the Welch-Satterthwaite degrees of freedom,
    and the p value comes from Student's t (``scipy.stats.t``).
    """
    from scipy import stats

    if len(ours) < 2 or len(reference) < 2:
        raise ValueError(
            f"a two-sample test needs two values or more on each side, got {len(ours)} and {len(reference)}"
        )
    va, vb = max(_sd(ours), resolution) ** 2 / len(ours), max(_sd(reference), resolution) ** 2 / len(reference)
    difference = sum(ours) / len(ours) - sum(reference) / len(reference)
    if va + vb == 0.0:
        return 1.0 if difference == 0.0 else 0.0
    t = difference / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(ours) - 1) + vb**2 / (len(reference) - 1))
    return float(2 * stats.t.sf(abs(t), df))


# ----------------------------------------------------------------------------------------- seed studies


@dataclass
class SeedStudy:
    """A chapter's trained numbers: ``metrics[name][seed]``, made with ``settings`` (JSON values).

    ``settings`` are what decides the numbers apart from the seeds and the numeric environment
    (backbone, data, budget, ...): a reference made with other settings is not compared with.
    """

    chapter: str
    settings: dict
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)
    resolution: float = DEFAULT_RESOLUTION

    def add(self, metric: str, seed: int, value: float) -> None:
        self.metrics.setdefault(metric, {})[int(seed)] = float(value)

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for values in self.metrics.values() for seed in values})


def run_settings_record(settings, **extra) -> dict:
    """The JSON settings of a :class:`~avpet_core.experiments.RunSettings` (less its seed, device and progress bar),
    plus a chapter's own ``extra`` parameters."""
    record = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("seed", "device", "progress")}
    record.update(extra)
    return _jsonable(record)


def reference_path(chapter: str, directory: Path | str | None = None) -> Path:
    return Path(directory or REFERENCE_DIR) / f"{chapter}.json"


def _shown(path: Path) -> str:
    """``path`` as a report prints it: relative to the folder that holds the package when it lies
    inside it (``avpet_core/references/05_training_avel.json``), so no machine's layout is printed."""
    try:
        return str(Path(path).resolve().relative_to(REFERENCE_DIR.parent.parent))
    except ValueError:
        return str(path)


def load_reference(path: Path | str) -> dict | None:
    """The reference run at ``path``, or ``None`` when there is none. A file that exists but cannot be
    used raises :class:`ReferenceFileError` naming the file, the line where one is known, and the fault."""
    path = Path(path)
    if not path.exists():
        return None
    text = path.read_text()
    try:
        reference = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReferenceFileError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(reference, dict):
        raise ReferenceFileError(f"{path}: a reference run is a JSON object, found {type(reference).__name__}")
    for key in ("settings", "seeds", "fingerprint", "metrics"):
        if key not in reference:
            raise ReferenceFileError(
                f"{path}: no {key!r} entry (a reference run has settings, seeds, fingerprint, metrics)"
            )
    metrics = {}
    for name, values in reference["metrics"].items():
        if not isinstance(values, dict):
            raise ReferenceFileError(f"{path}: metric {name!r} must map seeds to numbers, found {values!r}")
        try:
            metrics[name] = {int(seed): float(value) for seed, value in values.items()}
        except (TypeError, ValueError):
            raise ReferenceFileError(
                f"{path}: metric {name!r} has a seed or value that is not a number: {values!r}"
            ) from None
    reference["metrics"] = metrics
    return reference


def write_reference(study: SeedStudy, path: Path | str, environment: dict, fingerprint: dict) -> Path:
    """Write ``study`` as the reference run at ``path`` (what :func:`verify` does under the pins)."""
    from avpet_core.files import atomic_write_bytes

    record = {
        "chapter": study.chapter,
        "written_by": "avpet_core.verification.verify (make book, pinned numerics)",
        "settings": _jsonable(study.settings),
        "seeds": study.seeds,
        "environment": environment,
        "fingerprint": fingerprint,
        "metrics": {
            name: {str(seed): values[seed] for seed in sorted(values)} for name, values in study.metrics.items()
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())
    return path


# ------------------------------------------------------------------------------------------- the check


@dataclass
class Verification:
    """What :func:`verify` found: its mode and why, the consistency table, the claims table, failures."""

    chapter: str
    mode: Literal["exact", "statistical", "claims only"]
    reason: str
    consistency: "object | None"  # a pandas DataFrame, or None outside statistical mode
    claims: "object"  # a pandas DataFrame
    failures: list[str]
    written: Path | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"{self.chapter}: checked in {self.mode.upper()} mode: {self.reason}"]
        if self.consistency is not None:
            lines += [
                "",
                f"consistency with the reference (Welch's t, two-sided; Holm over {len(self.consistency)} "
                f"metrics at {100 * CONSISTENCY_LEVEL:.1f}% family-wise):",
                self.consistency.to_string(index=False),
            ]
        if len(self.claims):
            lines += [
                "",
                f"the chapter's claims, on this run's seeds (one-sided t; 'all parts': the largest p of "
                f"its parts; Holm over {len(self.claims)} claim(s) at {100 * CLAIM_LEVEL:.0f}% family-wise):",
                self.claims.to_string(index=False),
            ]
        if self.written is not None:
            lines += ["", f"reference written: {_shown(self.written)}"]
        if self.note:
            lines += ["", self.note]
        lines += ["", "FAILED:\n  " + "\n  ".join(self.failures) if self.failures else "verdict: every check passed"]
        return "\n".join(lines)

    __str__ = report


def verify(
    study: SeedStudy,
    claims: Sequence[Claim] = (),
    *,
    directory: Path | str | None = None,
    write: bool | None = None,
    fingerprint: dict | None = None,
    quiet: bool = False,
) -> Verification:
    """Check ``study`` against its chapter's reference and test ``claims``; print the report, and raise
    :class:`VerificationError` if the run does not reproduce the reference or an asserted claim is not
    separated (after writing the reference, when asked: nothing computed is lost).

    ``write`` (default: ``$AVPET_WRITE_REFERENCE`` is 1) writes this run as the new reference when the
    process runs under the book's pins and the run is consistent with the old one. ``fingerprint``
    replaces this process's weight fingerprint (tests; it is otherwise computed, in seconds).
    """

    from avpet_core import reproducibility

    write = os.environ.get(WRITE_ENV_VAR) == "1" if write is None else write
    path = reference_path(study.chapter, directory)
    reference = load_reference(path)
    failures: list[str] = []
    consistency = None
    own_fingerprint = fingerprint

    def this_fingerprint() -> dict:
        nonlocal own_fingerprint
        if own_fingerprint is None:
            from avpet_core.fingerprint import weights_fingerprint

            own_fingerprint = weights_fingerprint()
        return own_fingerprint

    settings = _jsonable(study.settings)
    if reference is None:
        mode, reason = "claims only", f"no reference run at {_shown(path)}"
    elif reference["settings"] != settings:
        changed = sorted(
            k for k in set(settings) | set(reference["settings"]) if settings.get(k) != reference["settings"].get(k)
        )
        differences = ", ".join(
            f"{k}: {reference['settings'].get(k)!r} there, {settings.get(k)!r} here" for k in changed
        )
        mode, reason = "claims only", f"the reference ({path.name}) was made with other settings ({differences})"
    elif reference["fingerprint"] == this_fingerprint() and reference["seeds"] == study.seeds:
        mode = "exact"
        reason = (
            f"this process's numeric environment is the reference's (weight fingerprint "
            f"{_short(own_fingerprint)}, {reference['environment'].get('known_environment') or 'unnamed'}) "
            f"and so are the settings and seeds {study.seeds}: every value must be equal bit for bit"
        )
        failures += _exact_failures(study, reference)
    else:
        mode = "statistical"
        why = []
        if reference["fingerprint"] != own_fingerprint:
            why.append(
                f"this process's weight fingerprint {_short(own_fingerprint)} is not the reference's "
                f"{_short(reference['fingerprint'])} ({reference['environment'].get('known_environment') or 'unnamed'})"
            )
        if reference["seeds"] != study.seeds:
            why.append(f"the seeds {study.seeds} are not the reference's {reference['seeds']}")
        reason = "; ".join(why) + ", so each metric is compared as a new draw over seeds"
        consistency, inconsistent = _consistency(study, reference)
        failures += inconsistent

    claims_table = _claims_table(claims)
    failures += [
        f"claim not separated: {row.claim} (p = {row.p:.2g}, Holm threshold {row.threshold:.2g})"
        for row in claims_table.itertuples()
        if row.verdict != "separated"
    ]

    written, note = None, ""
    if write:
        if not reproducibility.is_pinned():
            note = "reference not written: this process does not run with the book's pins"
        elif mode == "statistical" and consistency is not None and not consistency["consistent"].all():
            note = "reference not written: this run is not consistent with the one it would replace"
        elif mode == "exact" and any(not f.startswith("claim") for f in failures):
            note = "reference not written: exact mode found differences (re-made only from a consistent run)"
        else:
            from avpet_core.fingerprint import environment_identity, known_environment

            environment = environment_identity()
            known = known_environment(environment)
            environment["known_environment"] = None if known is None else known.name
            written = write_reference(study, path, environment, this_fingerprint())
    verification = Verification(study.chapter, mode, reason, consistency, claims_table, failures, written, note)
    if not quiet:
        print(verification.report())
    if failures:
        raise VerificationError(f"{study.chapter}: " + "; ".join(failures))
    return verification


def _exact_failures(study: SeedStudy, reference: dict) -> list[str]:
    failures = []
    for name in sorted(set(study.metrics) | set(reference["metrics"])):
        ours, theirs = study.metrics.get(name), reference["metrics"].get(name)
        if ours is None or theirs is None:
            failures.append(f"metric {name!r} is {'missing from this run' if ours is None else 'not in the reference'}")
            continue
        for seed in sorted(set(ours) | set(theirs)):
            if ours.get(seed) != theirs.get(seed):
                failures.append(f"{name}, seed {seed}: {ours.get(seed)!r} here, {theirs.get(seed)!r} in the reference")
    return failures


def _consistency(study: SeedStudy, reference: dict):
    import pandas as pd

    failures, rows = [], []
    names = [n for n in study.metrics if n in reference["metrics"]]
    failures += [f"metric {n!r} is missing from this run" for n in reference["metrics"] if n not in study.metrics]
    failures += [f"metric {n!r} is not in the reference" for n in study.metrics if n not in reference["metrics"]]
    p_values = {
        n: welch_p_value(list(study.metrics[n].values()), list(reference["metrics"][n].values()), study.resolution)
        for n in names
    }
    corrected = holm(p_values, CONSISTENCY_LEVEL)
    for n in names:
        ours, theirs = list(study.metrics[n].values()), list(reference["metrics"][n].values())
        threshold, rejected = corrected[n]
        rows.append(
            {
                "metric": n,
                "here": f"{_mean(ours):.4f} ± {_sd(ours):.4f}",
                "reference": f"{_mean(theirs):.4f} ± {_sd(theirs):.4f}",
                "p": float(f"{p_values[n]:.3g}"),
                "threshold": float(f"{threshold:.3g}"),
                "consistent": not rejected,
            }
        )
        if rejected:
            failures.append(
                f"{n}: mean {_mean(ours):.4f} here against {_mean(theirs):.4f} in the reference "
                f"(p = {p_values[n]:.2g} < Holm threshold {threshold:.2g})"
            )
    table = pd.DataFrame(rows, columns=["metric", "here", "reference", "p", "threshold", "consistent"])
    return table, failures


def _claims_table(claims: Sequence[Claim]):
    import pandas as pd

    statements = [c.statement for c in claims]
    if len(set(statements)) != len(statements):
        raise ValueError(f"claims must have different statements: {statements}")
    p_values = {c.statement: c.p_value() for c in claims}
    corrected = holm(p_values, CLAIM_LEVEL)
    rows = [
        {
            "claim": c.statement,
            "test": c.describe_test(),
            "seeds": c.seeds,
            "weakest part": c.weakest() if c.parts else "",
            "its mean": float(f"{c.mean:.4g}"),
            "p": float(f"{p_values[c.statement]:.3g}"),
            "threshold": float(f"{corrected[c.statement][0]:.3g}"),
            "verdict": "separated" if corrected[c.statement][1] else "not separated",
        }
        for c in claims
    ]
    return pd.DataFrame(
        rows, columns=["claim", "test", "seeds", "weakest part", "its mean", "p", "threshold", "verdict"]
    )


# -------------------------------------------------------------------------------------------- helpers


def _as_tuple(values) -> tuple[float, ...]:
    if isinstance(values, Mapping):
        values = [values[k] for k in sorted(values)]
    return tuple(float(v) for v in values)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _sd(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _short(fingerprint: dict | None) -> str:
    return "/".join(v[:8] for v in (fingerprint or {}).values()) or "unknown"


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

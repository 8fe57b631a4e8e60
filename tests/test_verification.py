"""avpet_core.verification: the exact and statistical checks of a chapter's run against its reference.

The statistics are checked against scipy's own tests; the modes on small hand-made studies; and the
statistical mode on a real (small) seed study trained in two numeric environments, where it must
accept the healthy run from the other environment and reject a planted regression.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from avpet_core import reproducibility, verification
from avpet_core.verification import (
    CONSISTENCY_LEVEL,
    Claim,
    ReferenceFileError,
    SeedStudy,
    VerificationError,
    holm,
    load_reference,
    reference_path,
    verify,
    welch_p_value,
    write_reference,
)

HERE = Path(__file__).resolve().parent
A, B = {"micro_vit": "a" * 64, "avpea": "a" * 64}, {"micro_vit": "b" * 64, "avpea": "b" * 64}


def study(values: dict[str, list[float]], seeds=(0, 1, 2), settings=None) -> SeedStudy:
    s = SeedStudy("demo", settings or {"epochs": 3})
    for name, row in values.items():
        for seed, value in zip(seeds, row):
            s.add(name, seed, value)
    return s


REFERENCE = {"row accuracy": [0.71, 0.74, 0.72], "other accuracy": [0.61, 0.64, 0.60]}


@pytest.fixture
def reference_dir(tmp_path):
    write_reference(study(REFERENCE), reference_path("demo", tmp_path), {"known_environment": "A"}, A)
    return tmp_path


# ------------------------------------------------------------------------------------------ statistics


def test_holm_by_hand():
    result = holm({"a": 0.004, "b": 0.03, "c": 0.015, "d": 0.2}, 0.05)
    # sorted: a 0.004 <= 0.05/4, c 0.015 <= 0.05/3, b 0.03 > 0.05/2: stops; d stays too
    assert result == {"a": (0.0125, True), "c": (0.05 / 3, True), "b": (0.025, False), "d": (0.05, False)}


def test_holm_controls_the_family_wise_error_under_the_null():
    rng = random.Random(0)
    false_alarms = sum(any(r for _, r in holm({k: rng.random() for k in range(6)}, 0.05).values()) for _ in range(4000))
    assert false_alarms / 4000 <= 0.05 + 0.01


def test_welch_is_scipys_without_a_resolution():
    a, b = [0.70, 0.73, 0.71, 0.69], [0.75, 0.74, 0.78]
    assert welch_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_welch_resolution_keeps_identical_seeds_from_an_infinite_t():
    assert welch_p_value([0.7, 0.7, 0.7], [0.701, 0.701, 0.701]) < 1e-9
    assert welch_p_value([0.7, 0.7, 0.7], [0.701, 0.701, 0.701], resolution=0.005) > 0.5


def test_claim_p_values_are_scipys():
    values = [0.71, 0.74, 0.72]
    assert Claim.above("x", values, 0.5).p_value() == pytest.approx(
        stats.ttest_1samp(values, 0.5, alternative="greater").pvalue
    )
    assert Claim.below("x", values, 0.8).p_value() == pytest.approx(
        stats.ttest_1samp(values, 0.8, alternative="less").pvalue
    )


def test_paired_claim_aligns_seeds_and_every_takes_the_largest_p():
    claim = Claim.paired("a > b", {0: 0.7, 1: 0.8, 5: 0.75}, {1: 0.7, 0: 0.65, 2: 0.1})
    assert claim.values == (0.7 - 0.65, 0.8 - 0.7)
    parts = [Claim.above("strong", [0.9, 0.91, 0.92], 0.5), Claim.above("weak", [0.52, 0.6, 0.49], 0.5)]
    joined = Claim.every("both", parts)
    assert joined.p_value() == max(p.p_value() for p in parts) and joined.weakest() == "weak"


def test_a_claim_needs_two_seeds():
    with pytest.raises(ValueError, match="two values or more"):
        Claim.above("x", [0.7])


# ---------------------------------------------------------------------------------------- reference files


def test_reference_round_trip(reference_dir):
    reference = load_reference(reference_path("demo", reference_dir))
    assert reference["metrics"]["row accuracy"] == {0: 0.71, 1: 0.74, 2: 0.72}
    assert reference["seeds"] == [0, 1, 2] and reference["fingerprint"] == A


def test_a_broken_reference_names_the_file_and_line(tmp_path):
    path = tmp_path / "demo.json"
    path.write_text('{\n "settings": {},\n "seeds": [0, 1]\n "metrics": {}\n}\n')
    with pytest.raises(ReferenceFileError, match=r"demo\.json, line 4: not valid JSON"):
        load_reference(path)
    path.write_text(json.dumps({"settings": {}, "seeds": [0], "fingerprint": A}))
    with pytest.raises(ReferenceFileError, match="demo.json: no 'metrics' entry"):
        load_reference(path)
    path.write_text(json.dumps({"settings": {}, "seeds": [0], "fingerprint": A, "metrics": {"m": {"0": "high"}}}))
    with pytest.raises(ReferenceFileError, match="metric 'm' has a seed or value that is not a number"):
        load_reference(path)


# ------------------------------------------------------------------------------------------------ modes


def test_no_reference_tests_the_claims_only(tmp_path):
    result = verify(
        study(REFERENCE),
        [Claim.above("beats chance", REFERENCE["row accuracy"], 0.5)],
        directory=tmp_path,
        fingerprint=A,
        write=False,
        quiet=True,
    )
    assert result.mode == "claims only" and "no reference run" in result.reason and result.ok


def test_reports_print_the_book_s_reference_paths_relative_to_the_package(tmp_path):
    from avpet_core.verification import REFERENCE_DIR, _shown

    assert _shown(REFERENCE_DIR / "05_training_avel.json") == str(
        Path("avpet_core", "references", "05_training_avel.json")
    )
    outside = tmp_path / "05_training_avel.json"
    assert _shown(outside) == str(outside)  # a folder of the user's own is printed as given


def test_other_settings_are_not_compared(reference_dir):
    result = verify(
        study(REFERENCE, settings={"epochs": 15}), directory=reference_dir, fingerprint=A, write=False, quiet=True
    )
    assert result.mode == "claims only" and "epochs: 3 there, 15 here" in result.reason


def test_exact_mode_passes_the_same_bits_and_names_a_changed_one(reference_dir):
    result = verify(study(REFERENCE), directory=reference_dir, fingerprint=A, write=False, quiet=True)
    assert result.mode == "exact" and result.ok
    changed = {**REFERENCE, "row accuracy": [0.71, 0.74 + 1e-12, 0.72]}
    with pytest.raises(
        VerificationError, match=r"row accuracy, seed 1: 0\.74000000000\d+ here, 0\.74 in the reference"
    ):
        verify(study(changed), directory=reference_dir, fingerprint=A, write=False, quiet=True)


def test_another_environment_or_other_seeds_check_statistically(reference_dir):
    nearby = {"row accuracy": [0.70, 0.735, 0.73], "other accuracy": [0.62, 0.63, 0.605]}
    result = verify(study(nearby), directory=reference_dir, fingerprint=B, write=False, quiet=True)
    assert result.mode == "statistical" and "fingerprint" in result.reason and result.ok
    assert result.consistency["consistent"].all() and len(result.consistency) == 2
    result = verify(
        study(REFERENCE, seeds=(10, 11, 12)), directory=reference_dir, fingerprint=A, write=False, quiet=True
    )
    assert result.mode == "statistical" and "seeds [10, 11, 12]" in result.reason


def test_an_unseparated_claim_fails_in_every_mode(reference_dir):
    weak = Claim.above("beats 0.73", REFERENCE["row accuracy"], 0.73)
    with pytest.raises(VerificationError, match="claim not separated: beats 0.73"):
        verify(study(REFERENCE), [weak], directory=reference_dir, fingerprint=A, write=False, quiet=True)


def test_the_report_says_the_mode_and_the_corrections(reference_dir, capsys):
    verify(
        study(REFERENCE),
        [Claim.above("beats chance", REFERENCE["row accuracy"], 0.5)],
        directory=reference_dir,
        fingerprint=B,
        write=False,
    )
    out = capsys.readouterr().out
    assert "checked in STATISTICAL mode" in out and "Holm over 2 metrics at 0.2%" in out
    assert "Holm over 1 claim(s) at 5%" in out and "verdict: every check passed" in out


def test_writing_needs_the_pins_and_keeps_a_failing_runs_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(reproducibility, "is_pinned", lambda: False)
    result = verify(study(REFERENCE), directory=tmp_path, fingerprint=A, write=True, quiet=True)
    assert result.written is None and "not written" in result.note
    monkeypatch.setattr(reproducibility, "is_pinned", lambda: True)
    monkeypatch.setattr("avpet_core.fingerprint.environment_identity", lambda environ=None: {"cpu_vendor": "test"})
    with pytest.raises(VerificationError):  # the claim fails, and the run's numbers are still written
        verify(
            study(REFERENCE),
            [Claim.above("beats 0.9", REFERENCE["row accuracy"], 0.9)],
            directory=tmp_path,
            fingerprint=A,
            write=True,
            quiet=True,
        )
    assert load_reference(reference_path("demo", tmp_path))["metrics"]["row accuracy"][1] == 0.74


def test_false_alarm_level_of_the_book():
    assert CONSISTENCY_LEVEL * verification.TRAINING_CHAPTERS == pytest.approx(verification.BOOK_FALSE_ALARM)
    assert len(list(verification.REFERENCE_DIR.glob("*.json"))) == verification.TRAINING_CHAPTERS


# ------------------------------------------------------- the statistical mode on a real small seed study

SEEDS = list(range(8))


def _seed_study(environ: dict[str, str], *flags: str) -> SeedStudy:
    done = subprocess.run(
        [sys.executable, str(HERE / "seed_study_worker.py"), *map(str, SEEDS), *flags],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    s = SeedStudy("two_towers", {"epochs": 3})
    for seed, value in json.loads(done.stdout).items():
        s.add("test accuracy", int(seed), value)
    return s


@pytest.fixture(scope="module")
def two_environments(tmp_path_factory):
    """The reference made under the pins; healthy and regressed runs made with ATen's default kernels."""
    directory = tmp_path_factory.mktemp("references")
    pinned = reproducibility.pinned_environ()
    write_reference(_seed_study(pinned), reference_path("two_towers", directory), {"known_environment": "pinned"}, A)
    other = {**pinned, "ATEN_CPU_CAPABILITY": "default"}
    return directory, other


def test_statistical_mode_accepts_a_healthy_run_from_another_environment(two_environments):
    directory, other = two_environments
    result = verify(_seed_study(other), directory=directory, fingerprint=B, write=False, quiet=True)
    assert result.mode == "statistical" and result.ok


@pytest.mark.parametrize("regression", [["--lr-scale", "0.1"], ["--zero-audio"]], ids=["lr/10", "audio zeroed"])
def test_statistical_mode_rejects_a_planted_regression(two_environments, regression):
    directory, other = two_environments
    with pytest.raises(VerificationError, match="test accuracy: mean"):
        verify(_seed_study(other, *regression), directory=directory, fingerprint=B, write=False, quiet=True)

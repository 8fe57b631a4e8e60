"""The first test to tell whether this machine reproduces the book's numerics bit for bit.

Two small models train for a few dozen steps in a fresh process started with the book's pinned
numerics (:data:`avpet_core.reproducibility.PINS`), and the SHA-256 of their final weights is
compared with the table of measured environments, :data:`avpet_core.fingerprint.KNOWN_ENVIRONMENTS`
(CPU vendor, the MKL branch MKL's verbose log reports, ATen's capability, torch version). On a known
environment, other hashes fail the test with the environment named: something the pins do not cover
has changed. On an unknown environment the test reports the hashes it got and skips: the chapters then
check their trained numbers statistically against the reference runs (:mod:`avpet_core.verification`),
and the hashes it printed are what a new entry of the table would hold.

The subprocess makes the test independent of how pytest was started (its environment, threads,
what earlier tests did to torch's global state).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from avpet_core.fingerprint import KNOWN_ENVIRONMENTS, known_environment
from avpet_core.reproducibility import PINS, UNPINNED_ENV_VAR, missing_pins, pinned_environ

RUN_FINGERPRINT = (
    "import json; from avpet_core import fingerprint as f; "
    "print(json.dumps({'environment': f.environment_identity(), 'fingerprint': f.weights_fingerprint()}))"
)


def _run(code: str, environ: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without(*names: str) -> dict[str, str]:
    environ = dict(os.environ)
    for name in names:
        environ.pop(name, None)
    return environ


def test_weights_fingerprint_matches_its_known_environment():
    report = _run(RUN_FINGERPRINT, pinned_environ())
    env = report["environment"]
    assert env["pinned"], f"the pins did not take effect in a process started with them: {env}"
    known = known_environment(env)
    if known is None:
        pytest.skip(
            "unknown numeric environment (no measured entry for CPU vendor "
            f"{env['cpu_vendor']}, MKL branch {env['mkl_branch']}, ATen {env['cpu_capability']}, "
            f"torch {env['torch']}): "
            f"its hashes are micro_vit {report['fingerprint']['micro_vit']}, avpea {report['fingerprint']['avpea']}. "
            "The chapters check their trained numbers statistically here."
        )
    assert report["fingerprint"] == known.fingerprint, (
        f"this machine is the known environment '{known.name}' (vendor {known.cpu_vendor}, MKL branch "
        f"{known.mkl_branch}, ATen {known.cpu_capability}, torch {known.torch}), but its fingerprint models' "
        f"weights differ from the measured ones: something the pins do not cover has changed.\n"
        f"numeric environment here: {json.dumps(env)}\nhashes here: {report['fingerprint']}\n"
        f"measured: {known.fingerprint}"
    )


def test_known_environments_are_distinct():
    keys = [(k.cpu_vendor, k.mkl_branch, k.cpu_capability, k.torch) for k in KNOWN_ENVIRONMENTS]
    assert len(set(keys)) == len(keys)
    assert {k.cpu_vendor for k in KNOWN_ENVIRONMENTS} == {"AuthenticAMD", "GenuineIntel"}
    for k in KNOWN_ENVIRONMENTS:
        assert set(k.fingerprint) == {"micro_vit", "avpea"} and all(len(v) == 64 for v in k.fingerprint.values())


def test_an_unknown_environment_is_named_none():
    env = {"cpu_vendor": "GenuineIntel", "mkl_branch": "AVX2,STRICT", "cpu_capability": "DEFAULT", "torch": "2.11.0"}
    assert known_environment(env) is None
    assert known_environment({**env, "cpu_capability": "AVX2"}).name.startswith("Intel")
    assert known_environment({**env, "cpu_capability": "AVX2", "torch": "2.11.0+cpu"}) is not None


def test_avpet_env_names_the_known_environment():
    done = subprocess.run(
        [sys.executable, "-m", "avpet_core.cli", "env", "--fingerprint", "--json"],
        env=pinned_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    known = known_environment(report["environment"])
    assert report["known_environment"] == (None if known is None else known.name)
    if known is not None:
        assert report["matches_known"] == (report["fingerprint"] == known.fingerprint)


def test_fingerprint_repeats_in_the_pinned_environment():
    """Two fresh processes, same hashes: nothing in the fingerprint depends on the run."""
    first = _run(RUN_FINGERPRINT, pinned_environ())["fingerprint"]
    assert _run(RUN_FINGERPRINT, pinned_environ())["fingerprint"] == first


@pytest.mark.parametrize("name", ["ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"])
def test_a_missing_pin_is_reported(name):
    environ = pinned_environ()
    del environ[name]
    assert name in missing_pins(environ)
    report = _run(
        "import json; from avpet_core import reproducibility as r; print(json.dumps(r.numeric_environment()))",
        {**environ, UNPINNED_ENV_VAR: "1"},
    )
    assert report["pinned"] is False


def test_aten_pin_takes_effect():
    report = _run(
        "import json, torch; print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability()}))", pinned_environ()
    )
    assert report["cap"] == "AVX2"


def test_mkl_and_onednn_pins_take_effect():
    """MKL and oneDNN say what they run when asked to be verbose."""
    code = (
        "import torch; a = torch.randn(32, 32); a @ a; "
        "torch.nn.functional.conv2d(torch.randn(1, 3, 16, 16), torch.randn(4, 3, 8, 8), stride=8)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**pinned_environ(), "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "CNR:" in out and "STRICT" in out, "MKL does not run in conditional numerical reproducibility mode"
    assert "isa:Intel AVX2" in out and "avx512" not in out.lower(), "oneDNN is not capped at AVX2"


def _avpet_env(environ: dict) -> dict:
    """What ``avpet env --json`` reports when started with ``environ``."""
    done = subprocess.run(
        [sys.executable, "-m", "avpet_core.cli", "env", "--json"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["environment"]


def test_avpet_restarts_itself_with_the_pins():
    env = _avpet_env(_without(*PINS))
    assert env["pinned"] and env["cpu_capability"] == "AVX2" and env["threads"] == 1, env


def test_avpet_keeps_the_machine_code_paths_when_asked():
    assert _avpet_env({**_without(*PINS), UNPINNED_ENV_VAR: "1"})["mkl_cbwr"] is None


def test_makefile_exports_the_same_pins_as_the_library():
    """The Makefile sets the pins for make's targets, PINS for avpet and the tests: one set, not two."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    exported = dict(re.findall(r"^export ([A-Z_]+) *:= *(\S+)", text, re.MULTILINE))
    assert {name: exported.get(name) for name in PINS} == PINS

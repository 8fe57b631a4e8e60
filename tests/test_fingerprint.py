"""The first test to tell whether this machine reproduces the book's committed numbers.

Two small models train for a few dozen steps in a fresh process started with the book's pinned
numerics (:data:`avpet_core.reproducibility.PINS`), and the SHA-256 of their final weights is
compared with the values below, which were made in the same environment as the chapters'
committed outputs. If they differ, the pins are not enough on this machine (another torch, another
MKL or oneDNN code path, another CPU vendor): the chapters' checked tables will not reproduce
either, and nbval would say so five chapters later and less clearly.

The subprocess makes the test independent of how pytest was started (its environment, threads,
what earlier tests did to torch's global state).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from avpet_core.reproducibility import PINS, UNPINNED_ENV_VAR, missing_pins, pinned_environ

# Made with torch 2.11.0 (the pins of .ci/constraints.txt) on an x86-64 AMD EPYC (AuthenticAMD),
# in the environment of PINS: `avpet env --fingerprint`.
COMMITTED = {
    "micro_vit": "3fbce63fc3423411e01544a211b962edcb6af3bc4a9d6fd215121ddff691025b",
    "avpea": "16256444f9d2af1e9ba676e66a301d09f427215f3330595fd9fe4ad5be3d4730",
}
RUN_FINGERPRINT = "import json; from avpet_core import fingerprint as f, reproducibility as r; " \
                  "print(json.dumps({'environment': r.numeric_environment(), 'fingerprint': f.weights_fingerprint()}))"


def _run(code: str, environ: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _without(*names: str) -> dict[str, str]:
    environ = dict(os.environ)
    for name in names:
        environ.pop(name, None)
    return environ


@pytest.mark.skipif(
    torch.__version__.split("+")[0] != "2.11.0",
    reason=f"the committed hashes were made with torch 2.11.0 (the pin of .ci/constraints.txt); torch "
    f"{torch.__version__} is installed here, whose kernels may round differently",
)
def test_weights_fingerprint_matches_the_committed_one():
    report = _run(RUN_FINGERPRINT, pinned_environ())
    env = report["environment"]
    assert env["pinned"], f"the pins did not take effect in a process started with them: {env}"
    assert report["fingerprint"] == COMMITTED, (
        "this machine does not reproduce the book's numerics: the fingerprint models' weights differ "
        f"from the committed ones, so the chapters' trained tables will differ too.\n"
        f"numeric environment here: {json.dumps(env)}\nhashes here: {report['fingerprint']}\n"
        "The committed hashes were made with torch 2.11.0 on an AMD x86-64 CPU with the pins of "
        "avpet_core.reproducibility.PINS. MKL honours MKL_CBWR=AVX2 on Intel CPUs only (elsewhere it "
        "uses its AUTO branch), so a CPU of another vendor can need MKL_CBWR=COMPATIBLE, or the "
        "committed outputs re-made on it."
    )


def test_fingerprint_repeats_in_the_pinned_environment():
    """Two fresh processes, same hashes: nothing in the fingerprint depends on the run."""
    first = _run(RUN_FINGERPRINT, pinned_environ())["fingerprint"]
    assert _run(RUN_FINGERPRINT, pinned_environ())["fingerprint"] == first


@pytest.mark.parametrize("name", ["ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"])
def test_a_missing_pin_is_reported(name):
    environ = pinned_environ()
    del environ[name]
    assert name in missing_pins(environ)
    report = _run("import json; from avpet_core import reproducibility as r; print(json.dumps(r.numeric_environment()))",
                  {**environ, UNPINNED_ENV_VAR: "1"})
    assert report["pinned"] is False


def test_aten_pin_takes_effect():
    report = _run("import json, torch; print(json.dumps({'cap': torch.backends.cpu.get_cpu_capability()}))", pinned_environ())
    assert report["cap"] == "AVX2"


def test_mkl_and_onednn_pins_take_effect():
    """MKL and oneDNN say what they run when asked to be verbose."""
    code = ("import torch; a = torch.randn(32, 32); a @ a; "
            "torch.nn.functional.conv2d(torch.randn(1, 3, 16, 16), torch.randn(4, 3, 8, 8), stride=8)")
    done = subprocess.run([sys.executable, "-c", code], env={**pinned_environ(), "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "CNR:" in out and "STRICT" in out, "MKL does not run in conditional numerical reproducibility mode"
    assert "isa:Intel AVX2" in out and "avx512" not in out.lower(), "oneDNN is not capped at AVX2"


def test_avpet_restarts_itself_with_the_pins():
    environ = _without(*PINS)
    done = subprocess.run([sys.executable, "-m", "avpet_core.cli", "env", "--json"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)["environment"]
    assert env["pinned"] and env["cpu_capability"] == "AVX2" and env["threads"] == 1, env


def test_avpet_keeps_the_machine_code_paths_when_asked():
    environ = {**_without(*PINS), UNPINNED_ENV_VAR: "1"}
    done = subprocess.run([sys.executable, "-m", "avpet_core.cli", "env", "--json"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["environment"]["mkl_cbwr"] is None


def test_makefile_exports_the_same_pins_as_the_library():
    """The Makefile sets the pins for make's targets, PINS for avpet and the tests: one set, not two."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    exported = dict(re.findall(r"^export ([A-Z_]+) *:= *(\S+)", text, re.MULTILINE))
    assert {name: exported.get(name) for name in PINS} == PINS

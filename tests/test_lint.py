"""The library, its tests and benchmarks keep one style: ruff's lint rules and formatter (pyproject's ``[tool.ruff]``).

Checked with the pinned ruff only (``make test``): another version may format differently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["avpet_core", "tests", "benchmarks"]

pytestmark = pytest.mark.skipif(
    os.environ.get("AVPET_PINNED_ENV") != "1", reason="the style is checked with the pinned ruff (make test)"
)


def ruff(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--no-cache", *CHECKED],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )


def test_lint_rules_hold():
    result = ruff("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted():
    result = ruff("format", "--check")
    assert result.returncode == 0, "run `ruff format avpet_core tests benchmarks`:\n" + result.stdout + result.stderr

"""The pinned environment: environment.yml, .ci/constraints.txt, the Makefile, CI, the installed versions.

Most checks read files and hold anywhere. The installed == pinned checks hold only where the pins
are meant to: the Makefile's .venv, which the Makefile marks by exporting ``AVPET_PINNED_ENV=1``
(so ``make test`` and CI check them). Elsewhere (Colab's preinstalled torch, a conda environment,
``make floors``) they skip and say what is installed, so a reader's pytest reports the library.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRED = (
    "torch",
    "torchaudio",
    "torchvision",
    "timm",
    "jupyter-book",
    "papermill",
    "nbval",
    "seaborn",
    "safetensors",
    "soundfile",
    "av",
    "tqdm",
)
PINNED_ENV_VAR = "AVPET_PINNED_ENV"
"""Set to 1 by the Makefile: this process runs in the pinned .venv, so installed must equal pinned."""
FLOORS = {
    # What 'make floors' tests, and why each bound is not lower (measured; see pyproject.toml).
    "torch": "2.3",  # torch.from_numpy fails with NumPy 2 before 2.3
    "torchaudio": "2.3",  # matches torch
    "timm": "1.0.21",  # before it, a ViT cannot be built on the meta device (parameter counts)
    "numpy": "1.24.1",  # the lowest the test extra allows (seaborn excludes 1.24.0), so the lowest tested
    "av": "12",  # av 11 has no wheel for Python 3.11
    "ipykernel": "6.3.1",  # 6.3.0 imports ipython_genutils without declaring it: pytest dies at collection
    "matplotlib": "3.8.4",  # 3.7.0 does not import with NumPy 2; 3.8.3 requires numpy < 2
}
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)\s*$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation: case-insensitive, runs of - _ . are equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(lines, source: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # comments, '-e .', '-c file'
            continue
        match = PIN.match(line)
        assert match, f"{source}: not an exact 'name==version' pin: {line!r}"
        name = normalise(match.group(1))
        assert name not in pins, f"{source}: {name} is pinned twice"
        pins[name] = match.group(2)
    return pins


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    path = REPO_ROOT / ".ci" / "constraints.txt"
    return parse_pins(path.read_text().splitlines(), str(path))


@pytest.fixture(scope="module")
def environment_pins() -> dict[str, str]:
    path = REPO_ROOT / "environment.yml"
    env = yaml.safe_load(path.read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{path}: expected one pip: section"
    return parse_pins(pip_sections[0], str(path))


def test_parse_pins_normalises_names():
    assert parse_pins(["PyYAML==6.0.3", "huggingface_hub==2.4.0", "# c", "-e ."], "x") == {
        "pyyaml": "6.0.3",
        "huggingface-hub": "2.4.0",
    }
    with pytest.raises(AssertionError, match="not an exact"):
        parse_pins(["torch>=2.1"], "x")


def test_environment_yml_pins_equal_constraints(environment_pins, constraints):
    assert environment_pins, "environment.yml has no pip pins"
    missing = sorted(set(environment_pins) - set(constraints))
    assert not missing, f".ci/constraints.txt lacks environment.yml's pins for {missing}"
    differ = {n: (v, constraints[n]) for n, v in environment_pins.items() if constraints[n] != v}
    assert not differ, f"environment.yml vs .ci/constraints.txt: {differ}"


def test_environment_yml_python_and_editable_install():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip


@pytest.mark.parametrize("package", REQUIRED)
def test_required_package_is_pinned_in_both(package, environment_pins, constraints):
    assert package in environment_pins, f"environment.yml does not pin {package}"
    assert package in constraints, f".ci/constraints.txt does not pin {package}"
    Version(constraints[package])  # a valid version


def test_torch_family_pins(constraints, environment_pins):
    for pins in (constraints, environment_pins):
        assert pins["torch"] == "2.11.0"
        assert pins["torchaudio"] == "2.11.0"
        assert pins["torchvision"] == "0.26.0"


def test_timm_is_1_0_x(constraints):
    version = Version(constraints["timm"])
    assert version.release[:2] == (1, 0)
    assert version >= Version(FLOORS["timm"])  # pyproject's lower bound


def test_jupyter_book_is_1_x(constraints):
    version = Version(constraints["jupyter-book"])
    assert Version("1.0.4.post1") <= version < Version("2")


def test_constraints_satisfy_pyproject_lower_bounds(constraints):
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    from packaging.requirements import Requirement

    for text in requirements:
        req = Requirement(text)
        name = normalise(req.name)
        assert name in constraints, f".ci/constraints.txt does not pin {name} (pyproject: {text})"
        assert req.specifier.contains(constraints[name], prereleases=True), (
            f"{name}=={constraints[name]} violates {text}"
        )


def _make_variables(text: str) -> dict[str, str]:
    variables = {}
    for match in re.finditer(r"^([A-Z_]+)\s*[:?]?=\s*(.*?)\s*$", text, re.MULTILINE):
        variables.setdefault(match.group(1), match.group(2))
    return variables


def _expand(line: str, variables: dict[str, str]) -> str:
    for _ in range(5):
        line = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), line)
    return line


def _recipe(text: str, target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)+)", text, re.MULTILINE)
    assert match, f"the Makefile has no '{target}' target"
    return match.group(1)


def test_makefile_installs_with_the_constraints():
    text = (REPO_ROOT / "Makefile").read_text()
    variables = _make_variables(text)
    floors = set(_recipe(text, "floors").splitlines())  # the one install that must not follow the pins
    installs = [
        shlex.split(_expand(line.strip(), variables))
        for line in text.splitlines()
        if line.startswith("\t") and "pip install" in line and "--upgrade pip" not in line and line not in floors
    ]
    assert installs, "the Makefile has no pip install recipe"
    for argv in installs:
        assert "-c" in argv, f"pip install without -c: {argv}"
        assert argv[argv.index("-c") + 1] == ".ci/constraints.txt", argv
        assert "-e" in argv and argv[argv.index("-e") + 1].startswith(".["), argv  # the package itself


def test_makefile_test_target_runs_pytest_on_tests():
    text = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert recipe, "the Makefile has no 'test' target"
    assert re.search(r"-m pytest tests\b", recipe.group(1))


def test_ci_runs_make_test():
    path = REPO_ROOT / ".ci" / "run"
    commands = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    assert "make test" in commands, f"{path} does not run 'make test'"


def test_makefile_marks_its_environment_as_pinned():
    text = (REPO_ROOT / "Makefile").read_text()
    assert re.search(rf"^export {PINNED_ENV_VAR} := 1$", text, re.MULTILINE), (
        f"the Makefile does not export {PINNED_ENV_VAR} := 1"
    )


def test_makefile_floors_target_tests_the_lowest_direct_versions():
    text = (REPO_ROOT / "Makefile").read_text()
    recipe = _recipe(text, "floors")
    install = next(line for line in recipe.splitlines() if "uv pip install" in line)
    argv = shlex.split(install.strip())
    assert argv[argv.index("--resolution") + 1] == "lowest-direct", install
    assert "-c" not in argv and "--constraint" not in argv, f"the floors must not follow the pins: {install}"
    assert argv[argv.index("-e") + 1] == ".[test]", install
    assert "$(BIN)" not in recipe and "$(VENV)" not in recipe, (
        "the floors need a venv of their own, not the pinned .venv"
    )
    assert re.search(rf"{PINNED_ENV_VAR}=0 \S+ -m pytest tests\b", recipe), "the floors run the unit tests, unpinned"
    assert re.search(r"^\.PHONY:.*\bfloors\b", text, re.MULTILINE)
    for target in ("test", "unit", "nbval", "pretrain", "venv"):  # not part of CI's 'make test'
        assert not re.search(rf"^{target}:.*\bfloors\b", text, re.MULTILINE)


def test_pyproject_floors_are_the_tested_ones():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    lower: dict[str, list[Version]] = {}
    for text in requirements:
        req = Requirement(text)
        bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
        lower.setdefault(normalise(req.name), []).extend(bounds)
    for name, floor in FLOORS.items():
        assert lower.get(name), f"pyproject.toml has no lower bound for {name}"
        assert min(lower[name]) >= Version(floor), f"pyproject.toml lets {name} go below {floor}: {lower[name]}"
    # timm brings torchvision; the library never imports it, so it is no direct dependency
    assert "torchvision" not in {normalise(Requirement(r).name) for r in project["dependencies"]}


def test_the_library_never_imports_torchvision():
    sources = sorted((REPO_ROOT / "avpet_core").rglob("*.py"))
    assert sources
    users = [
        str(p.relative_to(REPO_ROOT))
        for p in sources
        if re.search(r"^\s*(import|from)\s+torchvision\b", p.read_text(), re.MULTILINE)
    ]
    assert not users, f"{users} import torchvision: make it a direct dependency in pyproject.toml again"


def test_known_environments_are_measured_with_the_pinned_torch(constraints):
    """Every known environment of the fingerprint test was measured with the torch of .ci/constraints.txt
    (another torch is an unknown environment: the fingerprint test skips there)."""
    from avpet_core.fingerprint import KNOWN_ENVIRONMENTS

    assert KNOWN_ENVIRONMENTS
    assert {known.torch for known in KNOWN_ENVIRONMENTS} == {constraints["torch"]}


@pytest.mark.parametrize(
    "package", ["torch", "torchaudio", "torchvision", "timm", "numpy", "safetensors", "soundfile", "av"]
)
def test_installed_versions_match_constraints(package, constraints):
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if os.environ.get(PINNED_ENV_VAR) != "1":
        pytest.skip(
            f"not the pinned environment ({PINNED_ENV_VAR} is not 1; the Makefile's .venv sets it), so installed "
            f"versions need not equal .ci/constraints.txt: {package} {installed or 'not installed'} here, "
            f"pinned {constraints[package]}"
        )
    if installed is None:
        pytest.fail(f"{package} is not installed in this environment")
    assert Version(installed).base_version == constraints[package], (
        f"{package} {installed} installed, .ci/constraints.txt pins {constraints[package]}"
    )

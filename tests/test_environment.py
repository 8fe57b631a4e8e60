"""The pinned environment: environment.yml, .ci/constraints.txt, the Makefile, CI, the installed versions."""

from __future__ import annotations

import importlib.metadata
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
    assert version >= Version("1.0.13")  # pyproject's lower bound


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
        assert req.specifier.contains(constraints[name], prereleases=True), f"{name}=={constraints[name]} violates {text}"


def _make_variables(text: str) -> dict[str, str]:
    variables = {}
    for match in re.finditer(r"^([A-Z_]+)\s*[:?]?=\s*(.*?)\s*$", text, re.MULTILINE):
        variables.setdefault(match.group(1), match.group(2))
    return variables


def _expand(line: str, variables: dict[str, str]) -> str:
    for _ in range(5):
        line = re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), line)
    return line


def test_makefile_installs_with_the_constraints():
    text = (REPO_ROOT / "Makefile").read_text()
    variables = _make_variables(text)
    installs = [
        shlex.split(_expand(line.strip(), variables))
        for line in text.splitlines()
        if line.startswith("\t") and "pip install" in line and "--upgrade pip" not in line
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


@pytest.mark.parametrize("package", ["torch", "torchaudio", "torchvision", "timm", "safetensors", "soundfile"])
def test_installed_versions_match_constraints(package, constraints):
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{package} is not installed in this environment")
    assert Version(installed).base_version == constraints[package], (
        f"{package} {installed} installed, .ci/constraints.txt pins {constraints[package]}"
    )

"""Pinned CPU numerics: what makes a checked number come out the same on every machine.

PyTorch's CPU kernels choose an instruction set for the machine they run on, in three places:
ATen's own vectorised kernels (AVX2 or AVX-512), MKL's matrix products, and oneDNN's
convolutions. Each choice changes the last bits of a result, and training turns last bits into
different accuracies. Parallel reductions also depend on how many threads split them. So every
number the book checks is made with

* the three code paths pinned to AVX2, which every x86-64 machine of this kind has
  (:data:`PINS`: ``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``);
* one intra-op thread (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and :func:`pin_runtime`): the
  result then does not depend on the number of cores, and two chapters can run side by side on a
  two-core machine at almost the speed one of them would have alone;
* deterministic algorithms (:func:`pin_runtime`).

The variables of :data:`PINS` only take effect when they are set before torch initialises, so
they are set by whoever starts the process: the Makefile exports them (and so do its papermill
and nbval kernels, which inherit the environment), and the ``avpet`` command starts itself again
with them (:func:`exec_pinned`). :func:`numeric_environment` reports what is in effect, and
:func:`check_pinned` warns, in a reader's own Jupyter, that the numbers will differ from the
book's in their last digits.

This module imports torch only inside its functions, so the ``avpet`` command can decide to
restart itself before torch is loaded.
"""

from __future__ import annotations

import os
import sys
import warnings

from avpet_core.files import config_hash

PINS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""The environment every checked number is made in. ``MKL_CBWR=AVX2,STRICT``: MKL's conditional
numerical reproducibility on its AVX2 code path; ``STRICT`` also makes the results independent of
the inputs' memory alignment (which arrays that come from NumPy do not guarantee)."""

NUM_THREADS = int(PINS["OMP_NUM_THREADS"])
"""Intra-op threads of every pinned run (``OMP_NUM_THREADS`` of :data:`PINS`)."""

UNPINNED_ENV_VAR = "AVPET_UNPINNED"
"""Set to 1 to let the ``avpet`` command run with the machine's own code paths (faster, not the book's numbers)."""

CAPABILITY = "AVX2"
"""What ``torch.backends.cpu.get_cpu_capability()`` reports when the ATen pin took effect."""


class UnpinnedWarning(UserWarning):
    """Numbers made in this process will not match the book's committed ones bit for bit."""


def pinned_environ(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with :data:`PINS` set, for a child process."""
    environ = dict(os.environ if base is None else base)
    environ.update(PINS)
    return environ


def missing_pins(environ: dict[str, str] | None = None) -> dict[str, str | None]:
    """``{name: value found}`` for every variable of :data:`PINS` that ``environ`` does not set to its pin."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name) for name, value in PINS.items() if environ.get(name) != value}


def pin_runtime() -> None:
    """The in-process part of the pins: one thread and deterministic algorithms.

    Deterministic algorithms do not also fill every new tensor
    (``torch.utils.deterministic.fill_uninitialized_memory``, about 9% of a step's operator time):
    that fill only makes a read of uninitialised memory repeatable, and no path of the library
    reads memory it did not write, which the fingerprint test would show as a changing hash.
    """
    import torch
    import torch.utils.deterministic

    torch.set_num_threads(NUM_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... (from ``/proc/cpuinfo``; ``unknown`` elsewhere).

    It matters for MKL: its ``MKL_CBWR`` branches other than ``AUTO`` and ``COMPATIBLE`` are honoured
    on Intel processors only; on others MKL falls back to ``AUTO`` (``MKL_VERBOSE=1`` prints
    ``CNR:AUTO,STRICT`` there), so the AVX2 pin fixes MKL's code path among machines of one vendor.
    """
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mkl_branch(environ: dict[str, str] | None = None, timeout: float = 120) -> str | None:
    """The code path MKL actually runs under ``environ`` (default: this process's), as its verbose log
    reports it: ``AVX2,STRICT`` where the pin is honoured, ``AUTO,STRICT`` on an AMD processor given the
    same pin, ``OFF`` without ``MKL_CBWR``. ``None`` when the log says nothing (no MKL in this torch).

    MKL reads ``MKL_VERBOSE`` and ``MKL_CBWR`` once, when it initialises, so a fresh Python process runs
    one matrix product with ``MKL_VERBOSE=1`` (about two seconds: it imports torch).
    """
    import re
    import subprocess

    environ = dict(os.environ if environ is None else environ)
    environ["MKL_VERBOSE"] = "1"
    code = "import torch; a = torch.randn(64, 64); a @ a"
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=timeout)
    match = re.search(r"CNR:(\S+)", done.stdout + done.stderr)
    return match.group(1) if match else None


def numeric_environment() -> dict:
    """What decides the last bits of this process's CPU results (plain JSON values)."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu_vendor": cpu_vendor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "pinned": is_pinned(),
    }


def is_pinned() -> bool:
    """Whether this process runs with every pin in effect (the variables, and ATen's capability)."""
    import torch

    return not missing_pins() and torch.backends.cpu.get_cpu_capability() == CAPABILITY


def environment_key() -> str:
    """A short hash of the code paths and thread count in effect: part of every cache key of a
    trained model, so a model trained without the pins is never loaded by a pinned run."""
    import torch

    env = numeric_environment()
    fields = {k: env[k] for k in ("torch", "cpu_vendor", "cpu_capability", "mkl_cbwr", "onednn_max_cpu_isa")}
    fields["threads"] = NUM_THREADS if env["pinned"] else torch.get_num_threads()
    return config_hash(fields, 8)


def describe(environment: dict | None = None) -> str:
    """One line per setting, for a chapter's unchecked environment cell."""
    env = environment or numeric_environment()
    lines = [
        f"torch {env['torch']} on {env['cpu_vendor']}, CPU capability in use {env['cpu_capability']}, "
        f"MKL_CBWR={env['mkl_cbwr']}, ONEDNN_MAX_CPU_ISA={env['onednn_max_cpu_isa']}",
        f"{env['threads']} intra-op thread(s), deterministic algorithms {'on' if env['deterministic'] else 'off'}",
        "pinned: the book's numeric environment"
        if env["pinned"]
        else "NOT pinned: trained numbers will differ from the book's (see avpet_core.reproducibility)",
    ]
    return "\n".join(lines)


def check_pinned(stacklevel: int = 2) -> bool:
    """Warn (:class:`UnpinnedWarning`) when this process is not in the book's numeric environment.

    Returns whether it is. The warning says what to do: start Jupyter, papermill or pytest through
    the Makefile (``make book``, ``make test``), or with the variables of :data:`PINS` exported.
    """
    if is_pinned():
        return True
    settings = " ".join(f"{k}={v}" for k, v in PINS.items())
    warnings.warn(
        "this process does not run with the book's pinned CPU numerics "
        f"(missing or different: {missing_pins() or 'ATen did not take the AVX2 pin'}). Results are still "
        "deterministic on this machine, but ATen, MKL and oneDNN use this CPU's own instruction set, and "
        "training amplifies the last bits they change: trained numbers will differ from the committed ones, and "
        "each training chapter checks them statistically against its reference run (avpet_core.verification). "
        f"To reproduce the book's numbers, start the kernel with {settings} (the Makefile's targets do).",
        UnpinnedWarning,
        stacklevel=stacklevel,
    )
    return False


def exec_pinned(module: str, args: list[str]) -> None:
    """Start ``python -m module args`` in place of this process, with :data:`PINS` set.

    Does nothing when the pins are already set, when ``$AVPET_UNPINNED`` is 1, or when torch is
    already imported (a caller inside a live interpreter, such as a test: replacing it would be
    wrong). The process keeps its id, so ``torchrun`` still sees its workers.
    """
    if not missing_pins() or os.environ.get(UNPINNED_ENV_VAR) == "1" or "torch" in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *args], pinned_environ())

"""``avpet bench``: what the adapters cost beside the frozen backbone and full fine-tuning.

For each variant of :data:`VARIANTS` — the frozen backbone's forward, AV-PEA, LAVISH and the
Houlsby bottleneck (each at inference and as a training step), a head-only training step on the
frozen backbone, and full fine-tuning — on a batch of random clips (one frame and one second of
spectrogram each, at the backbone's input sizes) it measures:

* **step time** — the median over ``repeats`` rounds, with the variants **alternating within each
  round** (and the order reversed every other round), so that a machine that slows down or speeds
  up over the run moves every variant alike; ``time.perf_counter`` around each step, with
  ``torch.cuda.synchronize`` on CUDA; ``clips/s`` is the batch over that time;
* **FLOPs** of one step, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products,
  convolutions and attention, forward and backward; element-wise operations are not counted);
* **peak memory** of one step: the variant's own resident state (its weights, buffers and AdamW
  moments) plus the peak of what the step allocates above that (activations, gradients,
  temporaries) — measured by the process's peak resident set (``VmHWM``, reset before the step) on
  CPU, by ``torch.cuda.max_memory_allocated`` on CUDA. The variants share one frozen backbone in
  one process, so each variant's state is counted from its own tensors;
* **model-FLOPs utilisation** (CUDA only): FLOPs per second over the device's dense bf16 peak,
  from :data:`PEAK_BF16_FLOPS` by device name (an unknown device gets no MFU, and says so).

Every row has a ratio to its baseline (inference rows to the frozen forward, training rows to full
fine-tuning), printed side by side; ``--json`` prints all of it for machines. On CPU the command
runs in the book's pinned numerics like every ``avpet`` command (one thread; ``AVPET_UNPINNED=1``
for the machine's own code paths and threads); on CUDA every step runs under bf16 autocast, with
AdamW's fused kernel and timm's fused attention, as :func:`avpet_core.train.fit` runs there.

A new method is one more entry of :data:`VARIANTS` (a trimodal adapter: a :class:`Variant` with its
own ``build`` and ``inputs``).
"""

from __future__ import annotations

import ctypes
import gc
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avpet_core.adapters import adapter_config
from avpet_core.backbones import MICRO_VIT, create_backbone
from avpet_core.data.synthetic import SynthAVEConfig
from avpet_core.models import DualStreamConfig, DualStreamViT
from avpet_core.profiles import profile_for
from avpet_core.reproducibility import missing_pins, numeric_environment, pin_runtime

PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}
"""Dense (no sparsity) bf16 tensor-core peaks in FLOP/s by the vendor's datasheets, matched as
substrings of ``torch.cuda.get_device_name()``, longest first (an "NVIDIA H100 PCIe" is not
taken for an SXM H100). Leads, not measurements: a bf16 matrix product on random data measured
about 790 TFLOP/s on this workplace's H200 (80% of its 989)."""

CLASSES = 11
"""Classes of the benchmark's linear head (AVE's 10 events and background)."""


class BenchError(ValueError):
    """A benchmark that cannot run as asked (unknown variant, no CUDA device)."""


def peak_bf16_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak from :data:`PEAK_BF16_FLOPS`, or ``None`` for an unknown device."""
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16_FLOPS[key]
    return None


# -- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A benchmark batch: ``batch`` clips of ``image`` px frames and ``mel x frames`` spectrograms."""

    batch: int
    image: int
    mel: int
    frames: int


class Classifier(nn.Module):
    """A model and a linear head on its two CLS tokens: ``logits = head([visual_cls ; audio_cls])``."""

    def __init__(self, model: nn.Module, embed_dim: int):
        super().__init__()
        self.model = model
        self.head = nn.Linear(2 * embed_dim, CLASSES)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        out = self.model(frames, audio)
        return self.head(torch.cat([out.visual_cls, out.audio_cls], dim=-1)).flatten(0, -2)


def dual_stream_inputs(shape: Shape, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Random frames ``(B, 1, 3, S, S)`` in ``[0, 1]``, spectrograms ``(B, 1, 3, mel, frames)``, labels ``(B,)``."""
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(shape.batch, 1, 3, shape.image, shape.image, generator=g)
    audio = torch.randn(shape.batch, 1, 3, shape.mel, shape.frames, generator=g)
    labels = torch.randint(CLASSES, (shape.batch,), generator=g)
    return (frames.to(device), audio.to(device)), labels.to(device)


@dataclass
class Setup:
    """What the variants share: the backbone's name, one frozen copy of it, the batch shape, the device."""

    backbone_name: str
    shape: Shape
    device: torch.device
    frozen: nn.Module | None = None  # the shared frozen backbone (built on first use)

    def frozen_backbone(self) -> nn.Module:
        if self.frozen is None:
            torch.manual_seed(0)
            self.frozen = create_backbone(self.backbone_name, pretrained=False, freeze=True).to(self.device)
        return self.frozen


def dual_stream(method: str, *, full_finetune: bool = False) -> Callable[[Setup], nn.Module]:
    """A builder: the dual-stream ViT with ``method``'s adapters in both streams (on the shared frozen
    backbone), or with no adapter and every backbone weight trainable (``full_finetune``)."""

    def build(setup: Setup) -> nn.Module:
        torch.manual_seed(1)
        if full_finetune:
            backbone = create_backbone(setup.backbone_name, pretrained=False, freeze=False).to(setup.device)
        else:
            backbone = setup.frozen_backbone()
        model = DualStreamViT(backbone, DualStreamConfig(adapter=adapter_config(method), streams="both"))
        if full_finetune:
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(True)
        return Classifier(model, model.embed_dim).to(setup.device)

    return build


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark.

    Attributes:
        name: ``"avpea/train"``, ...
        label: what the row is, in words.
        training: a training step (forward, backward, AdamW over the trainable parameters) or a
            forward without gradients.
        baseline: the row this one's ratios are against.
        build: ``setup -> model``; the model is called as ``model(*inputs)`` and returns logits.
        inputs: ``(shape, device) -> (inputs, labels)``.
    """

    name: str
    label: str
    training: bool
    baseline: str
    build: Callable[[Setup], nn.Module]
    inputs: Callable[[Shape, torch.device], tuple] = dual_stream_inputs


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("frozen/infer", "frozen ViT, both streams, forward", False, "frozen/infer", dual_stream("none")),
        Variant("avpea/infer", "AV-PEA in both streams, forward", False, "frozen/infer", dual_stream("avpea")),
        Variant("lavish/infer", "LAVISH (AVE preset), forward", False, "frozen/infer", dual_stream("lavish")),
        Variant("houlsby/infer", "bottleneck adapters, forward", False, "frozen/infer", dual_stream("houlsby")),
        Variant("frozen/train", "frozen ViT, head only, training step", True, "full/train", dual_stream("none")),
        Variant("avpea/train", "AV-PEA adapters + head, training step", True, "full/train", dual_stream("avpea")),
        Variant("lavish/train", "LAVISH adapters + head, training step", True, "full/train", dual_stream("lavish")),
        Variant(
            "houlsby/train", "bottleneck adapters + head, training step", True, "full/train", dual_stream("houlsby")
        ),
        Variant(
            "full/train",
            "full fine-tuning (every ViT weight), training step",
            True,
            "full/train",
            dual_stream("none", full_finetune=True),
        ),
    )
}
"""The benchmark's rows, in the order they are run and printed."""


@dataclass(frozen=True)
class BenchConfig:
    """Settings of :func:`run_bench` (``None``: chosen by device and backbone, see :func:`resolve`)."""

    backbone: str = MICRO_VIT
    device: str = "cpu"
    batch: int | None = None
    repeats: int | None = None
    warmup: int | None = None
    bf16: bool = True
    compile: bool = False
    variants: tuple[str, ...] | None = None
    flops: bool = True
    memory: bool = True


def input_sizes(backbone: str) -> tuple[int, int, int]:
    """``(image, mel, frames)``: SynthAVE's sizes for the backbone's profile (micro-ViT: 48 px and
    64 x 96; else 224 px, 128 x 96)."""
    config = profile_for(backbone).synthetic(SynthAVEConfig())
    return config.image_size, config.fbank.num_mel_bins, config.fbank.target_frames


def resolve(config: BenchConfig) -> BenchConfig:
    """Fill the ``None`` settings: batch 16 clips for the micro-ViT on CPU, 4 for a paper backbone on
    CPU, 64 on CUDA; 5 rounds on CPU, 20 on CUDA; 1 warm-up step on CPU, 3 on CUDA; every variant."""
    cuda = torch.device(config.device).type == "cuda"
    batch = config.batch or (64 if cuda else profile_for(config.backbone).bench_cpu_batch)
    names = tuple(config.variants) if config.variants else tuple(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise BenchError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    names = tuple(dict.fromkeys([*names, *(VARIANTS[n].baseline for n in names)]))  # baselines always run
    names = tuple(n for n in VARIANTS if n in names)
    return BenchConfig(
        backbone=config.backbone,
        device=config.device,
        batch=batch,
        repeats=config.repeats or (20 if cuda else 5),
        warmup=config.warmup if config.warmup is not None else (3 if cuda else 1),
        bf16=config.bf16,
        compile=config.compile,
        variants=names,
        flops=config.flops,
        memory=config.memory,
    )


# -- memory -----------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc), so that a step's RSS growth is its own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
        return True
    except OSError:
        return False


def _state_bytes(model: nn.Module, optimiser: torch.optim.Optimizer | None) -> int:
    """Bytes of the model's weights and buffers and of the optimiser's state, each storage once."""
    seen: dict[int, int] = {}

    def add(tensor):
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
    if optimiser is not None:
        for state in optimiser.state.values():
            for value in state.values():
                add(value)
    return sum(seen.values())


# -- running ----------------------------------------------------------------------------------


@dataclass
class _Prepared:
    variant: Variant
    model: nn.Module
    inputs: tuple
    labels: torch.Tensor
    optimiser: torch.optim.Optimizer | None
    step: Callable[[], None]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


def _prepare(variant: Variant, setup: Setup, config: BenchConfig) -> _Prepared:
    model = variant.build(setup)
    inputs, labels = variant.inputs(setup.shape, setup.device)
    cuda = setup.device.type == "cuda"
    if cuda and hasattr(model, "model") and hasattr(model.model, "set_fused_attention"):
        model.model.set_fused_attention(True)
    forward = torch.compile(model) if config.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config.bf16)
    optimiser = None
    if variant.training:
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(trainable, lr=1e-4, **({"fused": True} if cuda else {}))

        def step():
            model.train()
            optimiser.zero_grad(set_to_none=True)
            with autocast:
                loss = F.cross_entropy(forward(*inputs), labels)
            loss.backward()
            optimiser.step()
    else:

        def step():
            model.eval()
            with torch.no_grad(), autocast:
                forward(*inputs)

    return _Prepared(variant, model, inputs, labels, optimiser, step)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(prepared: _Prepared, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one step."""
    _sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    prepared.step()
    _sync(device)
    return time.perf_counter() - started, time.process_time() - cpu_started


def _count_flops(prepared: _Prepared) -> int:
    """FLOPs of one step of the eager model (forward, and backward for a training step; the
    optimiser's element-wise update is not counted)."""
    model, inputs, labels = prepared.model, prepared.inputs, prepared.labels
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=labels.device.type == "cuda")
    with FlopCounterMode(display=False) as counter:
        if prepared.variant.training:
            with autocast:
                loss = F.cross_entropy(model(*inputs), labels)
            loss.backward()
        else:
            with torch.no_grad(), autocast:
                model(*inputs)
    if prepared.optimiser is not None:
        prepared.optimiser.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _measure_memory(prepared: _Prepared, device: torch.device) -> dict:
    if prepared.optimiser is not None:
        prepared.optimiser.zero_grad(set_to_none=True)  # gradients are the step's, counted in its peak
    gc.collect()
    state = _state_bytes(prepared.model, prepared.optimiser)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        prepared.step()
        _sync(device)
        extra = torch.cuda.max_memory_allocated(device) - before
        how = "torch.cuda.max_memory_allocated"
    else:
        _trim_heap()
        before_kib = _status_kib("VmRSS")
        exact = _reset_peak_rss()
        prepared.step()
        peak_kib = _status_kib("VmHWM")
        if before_kib is None or peak_kib is None:
            return {
                "memory_bytes": None,
                "state_bytes": state,
                "step_peak_bytes": None,
                "memory_measured_by": "unavailable",
            }
        extra = max(0, peak_kib - before_kib) * 1024
        how = (
            "VmHWM - VmRSS (peak RSS, reset before the step)" if exact else "VmHWM growth (peak RSS could not be reset)"
        )
    return {"memory_bytes": state + extra, "state_bytes": state, "step_peak_bytes": extra, "memory_measured_by": how}


def device_description(device: torch.device) -> dict:
    """The device's name, and for CPU the numeric environment (pins, threads)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return {"device": "cuda", "device_name": name, "peak_bf16_flops": peak_bf16_flops(name)}
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return {"device": "cpu", "device_name": name, "peak_bf16_flops": None, "environment": numeric_environment()}


def run_bench(config: BenchConfig = BenchConfig(), *, progress: Callable[[str], None] | None = None) -> dict:
    """Measure every variant of ``config`` (see the module docstring); a JSON-ready report."""
    config = resolve(config)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("device 'cuda' was asked for, but PyTorch sees no CUDA device")
    if device.type == "cpu":
        if _pinned():
            pin_runtime()
    image, mel, frames = input_sizes(config.backbone)
    setup = Setup(config.backbone, Shape(config.batch, image, mel, frames), device)
    say = progress or (lambda message: None)

    prepared = {}
    for name in config.variants:
        say(f"building {name}")
        prepared[name] = _prepare(VARIANTS[name], setup, config)
    compile_seconds = {}
    for name, p in prepared.items():  # warm-up: first-call costs (and compilation) stay out of the times
        started = time.perf_counter()
        for _ in range(config.warmup):
            _timed(p, device)
        compile_seconds[name] = time.perf_counter() - started
    order = list(prepared)
    for round_index in range(config.repeats):
        say(f"round {round_index + 1}/{config.repeats}")
        for name in order if round_index % 2 == 0 else reversed(order):
            wall, cpu = _timed(prepared[name], device)
            prepared[name].times.append(wall)
            prepared[name].cpu_times.append(cpu)

    info = device_description(device)
    peak = info.get("peak_bf16_flops")
    rows = []
    for name, p in prepared.items():
        seconds = statistics.median(p.times)
        row = {
            "name": name,
            "label": p.variant.label,
            "mode": "training" if p.variant.training else "inference",
            "baseline": p.variant.baseline,
            "trainable_parameters": sum(t.numel() for t in p.model.parameters() if t.requires_grad),
            "step_seconds": seconds,
            "step_seconds_min": min(p.times),
            "step_seconds_max": max(p.times),
            "step_seconds_all": p.times,
            "cpu_seconds": statistics.median(p.cpu_times),
            "cpu_seconds_all": p.cpu_times,
            "warmup_seconds": compile_seconds[name],
            "clips_per_second": config.batch / seconds,
        }
        if config.flops:
            say(f"counting the FLOPs of {name}")
            row["flops"] = _count_flops(p)
            row["flops_per_second"] = row["flops"] / seconds
            row["mfu"] = row["flops_per_second"] / peak if peak and device.type == "cuda" else None
        if config.memory:
            say(f"measuring the memory of {name}")
            row.update(_measure_memory(p, device))
        rows.append(row)
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        base = by_name[row["baseline"]]
        row["time_ratio"] = row["step_seconds"] / base["step_seconds"]
        row["cpu_time_ratio"] = row["cpu_seconds"] / base["cpu_seconds"] if base["cpu_seconds"] > 0 else None
        if "flops" in row:
            row["flop_ratio"] = row["flops"] / base["flops"] if base["flops"] else None
        if row.get("memory_bytes") is not None and base.get("memory_bytes"):
            row["memory_ratio"] = row["memory_bytes"] / base["memory_bytes"]
    report = {
        "backbone": config.backbone,
        "weights": "random",
        **info,
        "batch_clips": config.batch,
        "input": {"frames": [config.batch, 1, 3, image, image], "audio": [config.batch, 1, 3, mel, frames]},
        "dtype": "bf16 autocast" if device.type == "cuda" and config.bf16 else "float32",
        "compile": config.compile,
        "repeats": config.repeats,
        "warmup_steps": config.warmup,
        "timer": "time.perf_counter"
        + (" with torch.cuda.synchronize" if device.type == "cuda" else "")
        + "; time.process_time for the process's CPU seconds",
        "load_average": _load_average(),
        "order": "variants alternate within each round, the order reversed every other round",
        "torch": torch.__version__,
        "rows": rows,
        "ratios": {
            row["name"]: {
                "vs": row["baseline"],
                "time": row["time_ratio"],
                "cpu_time": row["cpu_time_ratio"],
                "flops": row.get("flop_ratio"),
                "memory": row.get("memory_ratio"),
            }
            for row in rows
        },
        "config": asdict(config),
    }
    if device.type == "cuda" and peak is None:
        report["mfu_note"] = (
            f"unknown device {info['device_name']!r}: no dense bf16 peak in "
            "avpet_core.bench.PEAK_BF16_FLOPS, so no model-FLOPs utilisation"
        )
    return report


def _load_average() -> list[float] | None:
    try:
        with open("/proc/loadavg") as handle:
            return [float(v) for v in handle.read().split()[:3]]
    except (OSError, ValueError):
        return None


def _pinned() -> bool:
    return not missing_pins()


def format_report(report: dict) -> str:
    """The report as a table: one row per variant, the ratios to its baseline side by side."""
    cuda = report["device"] == "cuda"
    env = report.get("environment") or {}
    where = report["device_name"] + (
        f", {env.get('threads')} thread(s), {'pinned' if env.get('pinned') else 'not pinned'}" if env else ""
    )
    lines = [
        f"avpet bench: {report['backbone']} ({report['weights']} weights) on {where}",
        f"batch {report['batch_clips']} clips (frames {report['input']['frames']}, audio {report['input']['audio']}), "
        f"{report['dtype']}, median of {report['repeats']} rounds, variants alternating"
        + (", torch.compile" if report["compile"] else ""),
        "",
    ]
    header = (
        f"{'variant':15} {'step ms':>9}"
        + ("" if cuda else f" {'cpu ms':>9}")
        + f" {'clips/s':>9} {'GFLOP':>9} {'memory MiB':>11}"
    )
    header += f" {'MFU':>6}" if cuda else ""
    header += f" | {'time':>6}" + ("" if cuda else f" {'cpu':>6}") + f" {'FLOPs':>6} {'memory':>6}  vs"
    lines.append(header)
    for row in report["rows"]:
        memory = f"{row['memory_bytes'] / 2**20:11.1f}" if row.get("memory_bytes") is not None else f"{'-':>11}"
        gflop = f"{row['flops'] / 1e9:9.2f}" if "flops" in row else f"{'-':>9}"
        cpu_ms = (
            ""
            if cuda
            else (f" {1e3 * row['cpu_seconds']:9.2f}" if row.get("cpu_seconds") is not None else f" {'-':>9}")
        )
        line = (
            f"{row['name']:15} {1e3 * row['step_seconds']:9.2f}{cpu_ms} {row['clips_per_second']:9.1f} {gflop} {memory}"
        )
        if cuda:
            line += f" {100 * row['mfu']:5.1f}%" if row.get("mfu") is not None else f" {'-':>6}"

        def ratio(value):
            return f"{value:5.3f}x" if value is not None else f"{'-':>6}"

        cpu_ratio = "" if cuda else f" {ratio(row.get('cpu_time_ratio'))}"
        line += (
            f" | {ratio(row['time_ratio'])}{cpu_ratio} {ratio(row.get('flop_ratio'))} "
            f"{ratio(row.get('memory_ratio'))}  {row['baseline']}"
        )
        lines.append(line)
    if report.get("mfu_note"):
        lines.append(report["mfu_note"])
    if not cuda:
        load = report.get("load_average")
        lines.append(
            "cpu ms: the process's CPU time per step (less moved than wall time by other processes); "
            f"load average at the end {load}"
        )
        lines.append(
            "memory: the variant's weights, buffers and AdamW moments + the step's peak RSS growth (approximate on CPU)"
        )
    return "\n".join(lines)

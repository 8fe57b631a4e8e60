"""One training loop for every task and adapter method, and the pieces it is made of.

* :func:`fit` — ``fit(model, head, task, train_set, val_set, config, run_dir)`` trains what a
  :class:`~avpet_core.models.base.TrainableModel` trains (the adapters of a
  :class:`~avpet_core.models.DualStreamViT`, or a whole model) and a task head, in three steps: set up
  the run (device, optimiser, schedule, what ``resume=True`` restores, the loader), train one epoch,
  end the epoch (evaluate, keep the best, write the files). It leaves in ``run_dir``:

  * ``last.safetensors`` / ``last.json`` and ``best.safetensors`` / ``best.json`` — what the model
    trains (its adapters, or all of it) and the head only (:mod:`avpet_core.checkpoints`), written
    atomically;
  * ``state.pt`` — what ``resume=True`` needs: optimiser, schedule, random state, epoch, history;
  * ``log.csv`` and ``log.json`` — one row of metrics per epoch.

* :class:`TrainConfig` (the settings), :class:`FitResult` (what a run produced), :func:`evaluate`
  (a task's metrics over a dataset), :class:`TrainingError`.
* The optimisation: :func:`parameter_groups` — AdamW with one learning rate (``model_lr``) for what
  the model trains (its adapters, AV-PEA: 3e-4) and another (``head_lr``) for the head;
  :func:`lr_factor` — linear warm-up then cosine decay (:func:`avpet_core.schedules.warmup_cosine`).
  Each step also clips the gradient norm and, on CUDA, autocasts to bf16. The frozen backbone is
  never in the optimiser.
* The data path: :func:`epoch_order`, :class:`EpochBatchSampler`, :class:`SeededItems`,
  :func:`training_loader` (below), and :func:`distributed_context` for several processes.

Determinism: on CPU a run is a function of its seed. Each epoch draws its sample order from a
generator seeded with ``(seed, epoch)`` and re-seeds the global RNG (dropout) the same way, the
thread count is fixed and deterministic algorithms are on — so a run that is stopped and resumed
from its last finished epoch ends with exactly the metrics of an uninterrupted run.

The data path: batches come from a ``torch.utils.data.DataLoader`` whose batch sampler
(:class:`EpochBatchSampler`) yields this process's share of each global batch of
:func:`epoch_order`, in order. With ``TrainConfig.num_workers > 0`` worker processes assemble
the batches ahead of the step (``prefetch_factor`` each), into pinned memory on CUDA. Every item
is read with the global RNGs (torch, ``random``, NumPy) seeded from ``(seed, epoch, index)`` and
restored afterwards (:class:`SeededItems`), so what an item draws does not depend on which
process reads it or how many there are, and the main process's dropout stream is the one it would
be without any loading at all. The default (``num_workers=None``) reads in the main process on CPU
— the book's runs — and uses workers on CUDA, where the accelerator would otherwise wait.

Several processes: started with ``torchrun --nproc_per_node N``, every process builds the same
model, takes its share of each global batch (``batch_size`` is the global batch), and
``DistributedDataParallel`` averages the gradients (gloo on CPU, nccl on CUDA). Every process
evaluates the full validation set (identical results); only rank 0 writes files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from tqdm.auto import tqdm

from avpet_core.checkpoints import load_trained, save_trained
from avpet_core.evaluation import autocast_for, predict, to_device
from avpet_core.files import atomic_write_bytes, ensure_writable
from avpet_core.models.base import TrainableModel, check_trainable
from avpet_core.reproducibility import NUM_THREADS, pin_runtime
from avpet_core.schedules import warmup_cosine


class TrainingError(ValueError):
    """A training run that cannot start or resume as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the offline CPU runs of the book).

    Attributes:
        epochs: passes over the training set.
        batch_size: the global batch (videos or questions), split across processes.
        model_lr: AdamW learning rate of what the model trains: its adapters (AV-PEA Sec. 4.1:
            3e-4), or, for a model without adapters (trained end to end), all its parameters.
        head_lr: learning rate of the task head.
        weight_decay: AdamW weight decay (not applied to gates, norms and biases).
        warmup_fraction: share of the steps with a linear warm-up, then cosine decay to 0.
        grad_clip: max global gradient norm (0 disables clipping).
        seed: everything random in the run derives from it.
        device: ``"cpu"`` or ``"cuda"``.
        bf16: autocast to bfloat16 on CUDA (ignored on CPU).
        num_threads: CPU threads (fixed, for reproducible sums; one in the book's pinned numerics).
        eval_batch_size: batch size for evaluation.
        progress: show tqdm progress bars.
        num_workers: DataLoader worker processes that assemble training batches; ``None``: none on
            CPU (the batches are made in the training process, as the book's runs are), and
            :func:`default_num_workers` on CUDA. The results do not depend on it.
        prefetch_factor: batches each worker prepares ahead (with workers only).
        pin_memory: page-locked batches for asynchronous copies to the GPU; ``None``: on CUDA.
        fused_optimizer: AdamW's fused CUDA kernel (one launch for all parameters); ``None``: on
            CUDA. On CPU the optimiser is PyTorch's default (the book's numbers).
        compile: ``torch.compile`` the model and head for training (off: on CPU it took 44 s for
            the first step and saved an eighth of the step time after it).
    """

    epochs: int = 4
    batch_size: int = 16
    model_lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True
    num_threads: int = NUM_THREADS
    eval_batch_size: int = 32
    progress: bool = True
    num_workers: int | None = None
    prefetch_factor: int = 4
    pin_memory: bool | None = None
    fused_optimizer: bool | None = None
    compile: bool = False


class LoopTask(Protocol):
    """What the loop needs from a task (:class:`avpet_core.tasks.base.Task` provides it).

    ``features(model, batch)`` runs the model on the batch's ``inputs``; the head does the rest
    (``head(features, batch)``, ``head.loss(out, batch)``, ``head.predict(out)``), and
    ``metrics(predictions, batches)`` scores an evaluation pass (``batches`` without the inputs).
    """

    name: str
    metric: str  # the metric that picks the best epoch (higher is better)
    inputs: tuple[str, ...]

    def features(self, model: nn.Module, batch: dict): ...

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict: ...


class Head(Protocol):
    """What the loop needs from a head: ``head(features, batch)``, ``loss(out, batch)``, ``predict(out)``."""

    def __call__(self, features, batch: dict): ...

    def loss(self, output, batch: dict) -> torch.Tensor: ...

    def predict(self, output) -> torch.Tensor: ...


class _Trainable(nn.Module):
    """Model + head as one module, so that DistributedDataParallel can wrap the pair."""

    def __init__(self, model: nn.Module, head: nn.Module, task: LoopTask):
        super().__init__()
        self.model, self.head, self.task = model, head, task

    def forward(self, batch: dict):
        return self.head(self.task.features(self.model, batch), batch)


@dataclass
class FitResult:
    """What a run produced: per-epoch history and the best epoch's metrics."""

    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    run_dir: str | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


# -- helpers ----------------------------------------------------------------------------------


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)``; initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("AVPET_DEVICE", "cpu") == "cuda" else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_order(length: int, seed: int, epoch: int) -> list[int]:
    """The sample order of an epoch: a permutation determined by ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(length, generator=generator).tolist()


def default_num_workers(device: str | torch.device) -> int:
    """Loader workers when ``TrainConfig.num_workers`` is ``None``: 0 on CPU, else up to 8, one core left free."""
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def epoch_item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the global RNGs while item ``index`` is read in ``epoch`` (any process, any worker)."""
    return (seed * 1_000_003 + epoch) * 1_000_000_007 + index


class EpochBatchSampler(Sampler[list]):
    """This process's share of every global batch of :func:`epoch_order`, in order.

    Yields lists of ``(epoch, index)`` pairs (``index`` into the dataset; the epoch travels with it
    so that :class:`SeededItems` can seed each item in any worker). A global batch of ``batch_size``
    items is split into ``world`` equal slices, rank ``r`` taking the ``r``-th; a slice left empty
    by the last, shorter batch is skipped. Call :meth:`set_epoch` before iterating an epoch.
    """

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size < 1 or batch_size % world:
            raise TrainingError(f"the global batch {batch_size} does not split evenly over {world} processes")
        self.length, self.batch_size, self.seed, self.rank, self.world = length, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The indices of this rank's batches in the current epoch."""
        order = epoch_order(self.length, self.seed, self.epoch)
        per_rank = self.batch_size // self.world
        steps = math.ceil(self.length / self.batch_size)
        shares = (
            order[s * self.batch_size : (s + 1) * self.batch_size][self.rank * per_rank : (self.rank + 1) * per_rank]
            for s in range(steps)
        )
        return [share for share in shares if share]

    def __iter__(self):
        for share in self.batches():
            yield [(self.epoch, index) for index in share]

    def __len__(self) -> int:
        return len(self.batches())


class SeededItems(Dataset):
    """``dataset`` read by ``(epoch, index)``, each item with the global RNGs seeded from
    :func:`epoch_item_seed` and restored afterwards (torch's CPU generator, ``random``, NumPy's)."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        seed = epoch_item_seed(self.seed, epoch, index)
        python_state = random.getstate()
        numpy = _numpy()
        numpy_state = numpy.random.get_state() if numpy is not None else None
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(
                    seed
                )  # the CPU generator (torch.manual_seed also seeds CUDA: 0.1 ms)
                random.seed(seed)
                if numpy is not None:
                    numpy.random.seed(seed % 2**32)
                return self.dataset[index]
        finally:
            random.setstate(python_state)
            if numpy is not None:
                numpy.random.set_state(numpy_state)


def _numpy():
    try:
        import numpy
    except ImportError:  # pragma: no cover - torch brings NumPy in every supported setup
        return None
    return numpy


def _seed_worker(worker_id: int) -> None:
    """A worker's own RNGs, from its loader's seed (items are seeded again by :class:`SeededItems`)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed)


def training_loader(
    dataset: Dataset, sampler: EpochBatchSampler, config: TrainConfig, device: str | torch.device = "cpu"
) -> DataLoader:
    """The loader of :func:`fit`: ``sampler``'s batches of ``dataset``, collated by ``default_collate``.

    Workers (``config.num_workers``, see :func:`default_num_workers`) stay alive across epochs; the
    loader has its own generator, so creating its iterator leaves the global RNG alone.
    """
    device = torch.device(device)
    workers = default_num_workers(device) if config.num_workers is None else config.num_workers
    pin = device.type == "cuda" if config.pin_memory is None else config.pin_memory
    options = {}
    if workers > 0:
        options = {
            "prefetch_factor": config.prefetch_factor,
            "persistent_workers": True,
            "worker_init_fn": _seed_worker,
        }
    return DataLoader(
        SeededItems(dataset, config.seed),
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=default_collate,
        pin_memory=pin and torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(config.seed),
        **options,
    )


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps (at least one), then cosine decay to zero
    (:func:`avpet_core.schedules.warmup_cosine`)."""
    return warmup_cosine(step, total, max(1, int(round(total * warmup_fraction))))


def parameter_groups(model: TrainableModel, head: nn.Module, config: TrainConfig) -> list[dict]:
    """What the model trains and the head, at their own learning rates; no weight decay on gates,
    norms and biases.

    The model's part is its ``trained_module()`` (the adapters of a frozen backbone, or a whole
    model trained end to end), in the group named by its ``checkpoint_prefix``.
    """
    groups = []
    for name, module, lr in (
        (model.checkpoint_prefix, model.trained_module(), config.model_lr),
        ("head", head, config.head_lr),
    ):
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
        groups.append({"name": f"{name}", "params": decay, "lr": lr, "weight_decay": config.weight_decay})
        groups.append({"name": f"{name}/no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


# -- the loop ---------------------------------------------------------------------------------


def evaluate(
    model: nn.Module, head: nn.Module, task: LoopTask, dataset: Dataset, config: TrainConfig
) -> dict[str, float]:
    """Metrics of ``task`` over the whole ``dataset`` (one :func:`avpet_core.evaluation.predict` pass)."""
    predictions, batches = predict(
        lambda batch: head.predict(head(task.features(model, batch), batch)),
        (model, head),
        dataset,
        batch_size=config.eval_batch_size,
        device=config.device,
        bf16=config.bf16,
        drop=task.inputs,
    )
    return task.metrics(predictions, batches)


def fit(
    model: TrainableModel,
    head: Head,
    task: LoopTask,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig = TrainConfig(),
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    metadata: dict | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FitResult:
    """Train what ``model`` trains (its adapters, or all of it) and ``head`` on ``train_set``; evaluate
    on ``val_set`` every epoch.

    ``model`` follows :class:`avpet_core.models.base.TrainableModel`. With ``val_set=None`` nothing
    is evaluated (self-supervised pretraining) and ``best`` is the last epoch.

    Args:
        run_dir: where checkpoints, state and logs go (``None``: keep nothing on disk).
        resume: continue from ``run_dir/state.pt`` (model, head, optimiser, schedule, random state,
            epoch, history); a run interrupted mid-epoch restarts that epoch.
        metadata: stored in every checkpoint's JSON (e.g. the experiment's name and settings).
        on_step: called as ``on_step(epoch, step_in_epoch, loss)`` after every optimiser step.
    """
    run = _set_up(model, head, task, train_set, config, run_dir, resume)
    for epoch in range(run.start_epoch, config.epochs):
        started = time.perf_counter()
        losses = _train_epoch(run, epoch, on_step)
        _end_epoch(run, epoch, losses, started, val_set, metadata)
    return run.result


@dataclass
class _Run:
    """What :func:`fit` sets up once and every epoch uses."""

    model: TrainableModel
    head: Head
    task: LoopTask
    config: TrainConfig
    run_dir: Path | None
    rank: int
    world: int
    device: torch.device
    forward: nn.Module  # model + head as one module: DDP-wrapped with several processes, compiled if asked
    autocast: AbstractContextManager  # bf16 on CUDA, a no-op on CPU (avpet_core.evaluation.autocast_for)
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    sampler: EpochBatchSampler
    loader: DataLoader
    steps_per_epoch: int
    result: FitResult
    start_epoch: int  # 0, or the epochs a resumed run had finished


def _check_request(config: TrainConfig, world: int, resume: bool, run_dir) -> torch.device:
    """The device of the run; :class:`TrainingError` for a run that cannot start as asked."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but PyTorch sees no CUDA device")
    if config.batch_size % world:
        raise TrainingError(f"the global batch {config.batch_size} does not split evenly over {world} processes")
    if resume and run_dir is None:
        raise TrainingError("resume=True needs a run directory")
    return device


def _set_up(
    model: TrainableModel,
    head: Head,
    task: LoopTask,
    train_set: Dataset,
    config: TrainConfig,
    run_dir: str | Path | None,
    resume: bool,
) -> _Run:
    """Everything before the first epoch: checks, numerics, devices, optimiser and schedule, the
    state of a resumed run, the loader."""
    check_trainable(model, "fit")
    rank, world = distributed_context()
    device = _check_request(config, world, resume, run_dir)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and rank == 0:
        ensure_writable(run_dir)

    trainable = _place(model, head, task, config, device, world)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    optimiser, schedule = _optimiser_and_schedule(model, head, config, device, steps_per_epoch * config.epochs)
    result = FitResult(run_dir=str(run_dir) if run_dir else None)
    start_epoch = 0
    if resume:
        start_epoch = _restore(run_dir, model, head, optimiser, schedule, result)

    autocast = autocast_for(device, config.bf16)
    forward = torch.compile(trainable) if config.compile else trainable
    sampler = EpochBatchSampler(len(train_set), config.batch_size, config.seed, rank, world)
    loader = training_loader(train_set, sampler, config, device)
    return _Run(
        model,
        head,
        task,
        config,
        run_dir,
        rank,
        world,
        device,
        forward,
        autocast,
        optimiser,
        schedule,
        sampler,
        loader,
        steps_per_epoch,
        result,
        start_epoch,
    )


def _place(
    model: TrainableModel, head: Head, task: LoopTask, config: TrainConfig, device: torch.device, world: int
) -> nn.Module:
    """The CPU numerics (pins, threads), model and head on ``device``, and the pair as one module
    (:class:`_Trainable`, wrapped in ``DistributedDataParallel`` with several processes)."""
    if device.type == "cpu":
        pin_runtime()
        torch.set_num_threads(config.num_threads)
    model.to(device)
    head.to(device)
    if device.type == "cuda" and hasattr(model, "set_fused_attention"):
        model.set_fused_attention(True)  # timm's F.scaled_dot_product_attention path (flash attention in bf16)
    trainable = _Trainable(model, head, task)
    if world > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trainable = nn.parallel.DistributedDataParallel(trainable, device_ids=device_ids)
    return trainable


def _optimiser_and_schedule(
    model: TrainableModel, head: Head, config: TrainConfig, device: torch.device, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`parameter_groups` (fused on CUDA unless told otherwise) and its
    :func:`lr_factor` schedule over ``total_steps``."""
    fused = device.type == "cuda" if config.fused_optimizer is None else config.fused_optimizer
    optimiser = torch.optim.AdamW(parameter_groups(model, head, config), **({"fused": True} if fused else {}))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(step, total_steps, config.warmup_fraction)
    )
    return optimiser, schedule


def _train_epoch(run: _Run, epoch: int, on_step: Callable[[int, int, float], None] | None) -> list[float]:
    """One pass over the training set (its order and dropout seeded by ``(seed, epoch)``); the loss
    of each step, averaged over the processes."""
    config, optimiser = run.config, run.optimiser
    torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout and any other global randomness
    run.sampler.set_epoch(epoch)
    run.model.train()
    run.head.train()
    losses = []
    bar = _progress(run.steps_per_epoch, f"epoch {epoch + 1}/{config.epochs}", config.progress and run.rank == 0)
    for step, batch in enumerate(run.loader):
        batch = to_device(batch, run.device)
        with run.autocast:
            output = run.forward(batch)
            loss = run.head.loss(output, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimiser.param_groups for p in g["params"]], config.grad_clip)
        optimiser.step()
        run.schedule.step()
        losses.append(_mean_over_ranks(loss.detach(), run.world))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(epoch, step, losses[-1])
    if bar is not None:
        bar.close()
    return losses


def _end_epoch(
    run: _Run, epoch: int, losses: list[float], started: float, val_set: Dataset | None, metadata: dict | None
) -> None:
    """Evaluate on ``val_set``, add the epoch's row to the history, keep it as the best if it is,
    and (rank 0, with a run directory) write the checkpoints, the state and the logs."""
    model, head, task, result = run.model, run.head, run.task, run.result
    metrics = evaluate(model, head, task, val_set, run.config) if val_set is not None else {}
    row = {
        "epoch": epoch + 1,
        "train_loss": sum(losses) / max(1, len(losses)),
        **{f"val_{k}": v for k, v in metrics.items()},
        "seconds": time.perf_counter() - started,
    }
    result.history.append(row)
    improved = not result.best or val_set is None or row[f"val_{task.metric}"] > result.best[f"val_{task.metric}"]
    if improved:
        result.best = dict(row)
    if run.run_dir is not None and run.rank == 0:
        meta = {**(metadata or {}), "epoch": epoch + 1, "metrics": row}
        save_trained(run.run_dir / "last", model, head, metadata=meta)
        if improved:
            save_trained(run.run_dir / "best", model, head, metadata=meta)
        _save_state(run.run_dir, epoch + 1, run.optimiser, run.schedule, result)
        _write_logs(run.run_dir, result.history)


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return value.item()


def _progress(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, desc=description, leave=False, mininterval=2.0)


def _save_state(run_dir: Path, epoch: int, optimiser, schedule, result: FitResult) -> None:
    state = {
        "epoch": epoch,
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "rng": torch.get_rng_state(),
        "history": result.history,
        "best": result.best,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(run_dir / "state.pt", buffer.getvalue())


def _restore(run_dir: Path, model, head, optimiser, schedule, result: FitResult) -> int:
    state_path = run_dir / "state.pt"
    if not state_path.is_file():
        raise TrainingError(f"{state_path}: nothing to resume from (no state file)")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a torn or foreign file
        raise TrainingError(f"{state_path}: cannot read the training state ({err})") from err
    load_trained(run_dir / "last", model, head)
    optimiser.load_state_dict(state["optimiser"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    result.history = list(state["history"])
    result.best = dict(state["best"])
    return int(state["epoch"])


def _write_logs(run_dir: Path, history: list[dict]) -> None:
    atomic_write_bytes(run_dir / "log.json", json.dumps(history, indent=2).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(run_dir / "log.csv", text.getvalue().encode())

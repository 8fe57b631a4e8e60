"""The training loop's data path: the epoch-order batch sampler, per-item seeding, worker processes,
and the synthetic splits cached on disk."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from avpet_core.data.synthetic import SynthAVE, SynthAVEConfig, SynthAVQA, SynthAVQAConfig
from avpet_core.train import EpochBatchSampler, SeededItems, TrainConfig, TrainingError, epoch_order, training_loader


@pytest.fixture
def local_sockets(monkeypatch):
    """Worker processes hand tensors back over Unix-domain sockets; every other connection stays blocked."""
    import _socket
    import socket

    blocked = socket.socket.connect

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return _socket.socket.connect(self, address)
        return blocked(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


class Noisy(Dataset):
    """Items that draw from the global RNGs (as an augmentation would)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict:
        return {"index": torch.tensor(index), "torch": torch.rand(3), "python": torch.tensor(random.random())}


def test_the_sampler_yields_each_ranks_share_of_the_epoch_order():
    length, batch, seed = 11, 4, 3
    for epoch in range(3):
        order = epoch_order(length, seed, epoch)
        single = EpochBatchSampler(length, batch, seed)
        single.set_epoch(epoch)
        batches = list(single)
        assert [i for b in batches for e, i in b] == order and {e for b in batches for e, _ in b} == {epoch}
        assert [len(b) for b in batches] == [4, 4, 3] and len(single) == 3
        halves = []
        for rank in range(2):
            sampler = EpochBatchSampler(length, batch, seed, rank=rank, world=2)
            sampler.set_epoch(epoch)
            halves.append([[i for _, i in b] for b in sampler])
        assert [a + b for a, b in zip(*halves)] == [[i for _, i in b] for b in batches] and len(halves[0]) == 3
        assert halves[0][2] == order[8:10] and halves[1][2] == order[10:]
    with pytest.raises(TrainingError, match="does not split evenly"):
        EpochBatchSampler(10, 3, 0, world=2)


def test_an_empty_last_share_is_skipped():
    sampler = EpochBatchSampler(9, 4, 0, rank=1, world=2)  # the last global batch has one item, rank 0's
    assert [len(b) for b in sampler] == [2, 2]


def test_items_draw_the_same_randomness_in_any_process_and_leave_the_global_rng_alone():
    items = SeededItems(Noisy(), seed=5)
    torch.manual_seed(123)
    random.seed(7)
    before, python_before = torch.get_rng_state(), random.getstate()
    first = items[(2, 4)]
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == python_before
    torch.manual_seed(999)  # another global state: the item does not change
    again = items[(2, 4)]
    assert torch.equal(first["torch"], again["torch"]) and first["python"] == again["python"]
    assert not torch.equal(items[(3, 4)]["torch"], first["torch"])  # another epoch, another draw


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_do_not_depend_on_the_number_of_workers(workers, local_sockets):
    def epochs(num_workers):
        sampler = EpochBatchSampler(10, 4, seed=1)
        loader = training_loader(Noisy(), sampler, TrainConfig(seed=1, num_workers=num_workers, prefetch_factor=2))
        out = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            out.extend(loader)
        return out

    torch.manual_seed(0)
    state = torch.get_rng_state()
    reference = epochs(0)
    assert torch.equal(torch.get_rng_state(), state)  # the loader's iterator draws nothing from the global RNG
    other = epochs(workers)
    assert len(reference) == len(other) == 6
    for a, b in zip(reference, other):
        assert all(torch.equal(a[k], b[k]) for k in ("index", "torch", "python"))


# -- the disk cache of the synthetic splits ---------------------------------------------------------

SMALL_AVE = SynthAVEConfig(num_videos=3, num_eval_videos=2)
SMALL_AVQA = SynthAVQAConfig(num_scenes=2, num_eval_scenes=1, num_segments=3)


def items_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_synthave_disk_cache_is_keyed_by_config_and_numeric_environment(tmp_path, monkeypatch):
    from avpet_core import reproducibility
    from avpet_core.data.synthetic import cache

    fresh = SynthAVE(SMALL_AVE, "train")
    cached = SynthAVE(SMALL_AVE, "train", cache=tmp_path)
    assert reproducibility.environment_key() in cached.cache_path.name and SMALL_AVE.key() in cached.cache_path.name
    assert all(items_equal(fresh[i], cached[i]) for i in range(len(fresh)))
    monkeypatch.setattr(cache, "environment_key", lambda: "otherenv")
    other = SynthAVE(SMALL_AVE, "train", cache=tmp_path)
    assert other.cache_path != cached.cache_path and other.cache_path.is_file()


def test_synthave_cache_built_by_workers_is_the_same(tmp_path, local_sockets):
    serial = SynthAVE(SMALL_AVE, "val", cache=tmp_path / "a")
    parallel = SynthAVE(SMALL_AVE, "val", cache=tmp_path / "b", cache_workers=2)
    assert serial.cache_path.read_bytes() == parallel.cache_path.read_bytes()


def test_synthavqa_disk_cache_gives_the_rendered_items(tmp_path, monkeypatch):
    fresh = SynthAVQA(SMALL_AVQA, "train", keep_videos=None)
    cached = SynthAVQA(SMALL_AVQA, "train", keep_videos=None).use_disk_cache(tmp_path)
    assert cached.media.cache_path.is_file()
    assert all(items_equal(fresh[i], cached[i]) for i in range(len(fresh)))

    def no_rendering(*args, **kwargs):
        raise AssertionError("a cached split must not render")

    from avpet_core.data.synthetic import avqa

    monkeypatch.setattr(avqa, "render_scene", no_rendering)
    again = SynthAVQA(SMALL_AVQA, "train", keep_videos=None).use_disk_cache(tmp_path)
    assert all(items_equal(fresh[i], again[i]) for i in range(len(fresh)))


def test_experiment_splits_are_cached_once(monkeypatch, tmp_path):
    from dataclasses import replace

    from avpet_core import experiments
    from avpet_core.data.synthetic import ave

    monkeypatch.setenv("AVPET_CACHE_DIR", str(tmp_path))
    experiment = replace(
        experiments.get_experiment("table4/both"), data=SynthAVEConfig(num_videos=3, num_eval_videos=2)
    )
    first = experiments.datasets(experiment, experiments.RunSettings(pretrained=False))
    files = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert len(files) == 3 and all(name.startswith("synthave-") for name in files)

    def no_generation(*args, **kwargs):
        raise AssertionError("cached splits must not be generated again")

    monkeypatch.setattr(ave, "synth_ave_video", no_generation)
    second = experiments.datasets(experiment, experiments.RunSettings(pretrained=False))
    assert all(items_equal(a[0], b[0]) for a, b in zip(first, second))


def test_fit_gives_the_same_run_with_and_without_workers(local_sockets):
    from avpet_core.heads import SegmentClassifier
    from avpet_core.models import build_dual_stream
    from avpet_core.tasks import AVELTask
    from avpet_core.train import fit

    data = SynthAVEConfig(num_videos=6, num_eval_videos=2)
    train, val = SynthAVE(data, "train", cache="memory"), SynthAVE(data, "val", cache="memory")
    runs = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = build_dual_stream("micro_vit", "avpea", "both")
        head = SegmentClassifier(model.embed_dim, data.num_classes + 1, hidden=16)
        config = TrainConfig(
            epochs=2,
            batch_size=4,
            model_lr=1e-2,
            head_lr=1e-2,
            progress=False,
            eval_batch_size=4,
            num_workers=workers,
            prefetch_factor=2,
        )
        result = fit(model, head, AVELTask(), train, val, config)
        weights = torch.cat([p.detach().flatten() for p in [*model.adapters.parameters(), *head.parameters()]])
        runs.append(([{k: v for k, v in row.items() if k != "seconds"} for row in result.history], weights))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])

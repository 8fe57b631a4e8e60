"""SynthAVE, the offline stand-in for AVE: its config, the segment kinds and their oracles, the
planning and rendering of a video, and the :class:`SynthAVE` dataset (see
:mod:`avpet_core.data.synthetic` for what the data is).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avpet_core.audio import FbankConfig, segment_fbank_images
from avpet_core.data.synthetic.cache import data_cache_dir, load_split, render_items, save_split, split_cache_path
from avpet_core.data.synthetic.classes import MAX_CLASSES, class_spec
from avpet_core.data.synthetic.drawing import background_frames, draw_object, finish_frames
from avpet_core.data.synthetic.nuisance import NuisanceConfig
from avpet_core.data.synthetic.seeds import NUM_SEGMENTS, check_split, item_seed, uniform
from avpet_core.data.synthetic.sound import SYNTH_FBANK_MICRO, SYNTH_FBANK_VITB, synthesise_class_sound
from avpet_core.files import config_hash, ensure_writable

SEGMENT_KINDS = ("event", "neither", "visible_silent", "audible_offscreen")
EVENT, NEITHER, VISIBLE_SILENT, AUDIBLE_OFFSCREEN = range(4)
KIND_VISIBLE = torch.tensor([True, False, True, False])
KIND_AUDIBLE = torch.tensor([True, False, False, True])

# ---------------------------------------------------------------------------------------------
# Configuration.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SynthAVEConfig(NuisanceConfig):
    """Everything that determines a SynthAVE dataset. Presets: the default (micro-ViT) and :data:`SYNTH_AVE_VITB`.

    The drawing and sound nuisances are the fields of :class:`NuisanceConfig`, taken as this
    config's own (``SynthAVEConfig(pixel_noise=0.0)``); :attr:`nuisance` collects them.
    """

    num_classes: int = 10  # event classes K; the background label is K
    num_videos: int = 600  # train videos
    num_eval_videos: int = 200  # val videos (and test videos unless num_test_videos is set)
    image_size: int = 48
    fbank: FbankConfig = SYNTH_FBANK_MICRO
    seed: int = 0
    num_segments: int = NUM_SEGMENTS
    kind_proportions: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)  # SEGMENT_KINDS order
    stickiness: float = 0.6
    snr_db: tuple[float, float] = (-5.0, 15.0)  # of the sound over the background noise, drawn per video
    gain_db: tuple[float, float] = (-6.0, 6.0)  # overall level, drawn per video
    num_test_videos: int | None = None  # None: num_eval_videos; a test split larger than val costs one evaluation

    def __post_init__(self):
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {self.num_classes}")
        proportions = self.kind_proportions
        if len(proportions) != 4 or abs(sum(proportions) - 1) > 1e-6 or min(proportions) < 0:
            raise ValueError(f"kind_proportions must be 4 non-negative numbers summing to 1, got {proportions}")
        if not 0 <= self.stickiness < 1:
            raise ValueError(f"stickiness must be in [0, 1), got {self.stickiness}")

    def split_size(self, split: str) -> int:
        check_split(split)
        if split == "test" and self.num_test_videos is not None:
            return self.num_test_videos
        return self.num_videos if split == "train" else self.num_eval_videos

    def key(self) -> str:
        """A short hash of every field, naming cache files."""
        return config_hash(self)

    @property
    def nuisance(self) -> NuisanceConfig:
        """The drawing and sound nuisances alone, as a :class:`NuisanceConfig`."""
        return NuisanceConfig(**{f.name: getattr(self, f.name) for f in fields(NuisanceConfig)})

    @property
    def background_proportions(self) -> dict[str, float]:
        """Share of each background kind among background segments (default one third each)."""
        background = 1.0 - self.kind_proportions[EVENT]
        kinds = (NEITHER, VISIBLE_SILENT, AUDIBLE_OFFSCREEN)
        return {SEGMENT_KINDS[k]: self.kind_proportions[k] / background for k in kinds}


SYNTH_AVE_VITB = SynthAVEConfig(image_size=224, fbank=SYNTH_FBANK_VITB)
"""SynthAVE at ViT-B/16's input size: 224 px frames, 128 x 96 spectrograms."""

# ---------------------------------------------------------------------------------------------
# Segment kinds: the sticky Markov chain and its oracles.
# ---------------------------------------------------------------------------------------------


def kind_transition_matrix(config: SynthAVEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(initial, transition)`` of the segment-kind chain (float64): ``P = s I + (1 - s) 1 pi^T``."""
    pi = torch.tensor(config.kind_proportions, dtype=torch.float64)
    transition = config.stickiness * torch.eye(4, dtype=torch.float64) + (1 - config.stickiness) * pi.expand(4, 4)
    return pi, transition


def sample_segment_kinds(config: SynthAVEConfig, generator: torch.Generator, num_videos: int = 1) -> torch.Tensor:
    """Kinds ``(num_videos, T)`` (indices into :data:`SEGMENT_KINDS`) drawn from the chain."""
    pi = torch.tensor(config.kind_proportions, dtype=torch.float64)
    fresh = torch.multinomial(pi, num_videos * config.num_segments, replacement=True, generator=generator)
    fresh = fresh.view(num_videos, config.num_segments)
    stay = torch.rand(num_videos, config.num_segments, generator=generator, dtype=torch.float64) < config.stickiness
    kinds = fresh.clone()
    for t in range(1, config.num_segments):
        kinds[:, t] = torch.where(stay[:, t], kinds[:, t - 1], fresh[:, t])
    return kinds


def _event_joint(
    observed: torch.Tensor, emits: torch.Tensor, config: SynthAVEConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-backward over the kind chain given one modality's on/off pattern.

    ``observed`` is ``(N, T)`` bool (audible, or visible, per segment); ``emits`` says which kinds
    show as "on" in that modality. Returns ``P(kind_t = event, observed)`` and ``P(kind_t !=
    event, observed)``, each ``(N, T)``.
    """
    pi, transition = kind_transition_matrix(config)
    consistent = (observed.unsqueeze(-1) == emits.view(1, 1, 4)).double()  # (N, T, 4)
    steps = observed.shape[1]
    alpha = [pi * consistent[:, 0]]
    for t in range(1, steps):
        alpha.append((alpha[-1] @ transition) * consistent[:, t])
    beta = [torch.ones_like(alpha[0])]
    for t in range(steps - 1, 0, -1):
        beta.insert(0, (consistent[:, t] * beta[0]) @ transition.T)
    joint = torch.stack(alpha, 1) * torch.stack(beta, 1)  # (N, T, 4)
    return joint[..., EVENT], joint.sum(-1) - joint[..., EVENT]


def oracle_predictions(kinds: torch.Tensor, modality: str, config: SynthAVEConfig) -> torch.Tensor:
    """Bayes-optimal "is this segment an event?" ``(N, T)`` from one modality's ground truth.

    ``modality`` is ``"audio"`` (the oracle sees which segments are audible and the class),
    ``"vision"`` (which are visible) or ``"both"`` (event iff visible and audible: exact).
    """
    visible, audible = KIND_VISIBLE[kinds], KIND_AUDIBLE[kinds]
    if modality == "both":
        return visible & audible
    observed, emits = {"audio": (audible, KIND_AUDIBLE), "vision": (visible, KIND_VISIBLE)}[modality]
    p_event, p_background = _event_joint(observed, emits, config)
    return p_event > p_background


def oracle_accuracies(config: SynthAVEConfig) -> dict[str, float]:
    """Expected segment accuracy of the best audio-only, vision-only and audio-visual oracle.

    Exact, not sampled: every one of the ``2**T`` on/off patterns a modality can show is weighed by
    its probability under the kind chain, and for each segment the oracle picks the likelier of
    event and background given the whole pattern; its accuracy is the sum of those maxima. The
    class never limits an oracle: whenever a segment is audible (visible), the sound (object)
    reveals it.
    """
    steps = config.num_segments
    patterns = ((torch.arange(2**steps).unsqueeze(1) >> torch.arange(steps)) & 1).bool()
    result = {}
    for modality, emits in (("audio", KIND_AUDIBLE), ("vision", KIND_VISIBLE)):
        p_event, p_background = _event_joint(patterns, emits, config)
        result[modality] = torch.maximum(p_event, p_background).sum().item() / steps
    result["both"] = 1.0
    return result


# ---------------------------------------------------------------------------------------------
# Videos: plan, render.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoPlan:
    """A SynthAVE video's ground truth: its class and each segment's kind."""

    class_index: int
    kinds: torch.Tensor  # (T,) indices into SEGMENT_KINDS
    snr_db: float

    @property
    def visible(self) -> torch.Tensor:
        return KIND_VISIBLE[self.kinds]

    @property
    def audible(self) -> torch.Tensor:
        return KIND_AUDIBLE[self.kinds]


def video_generator(config: SynthAVEConfig, split: str, index: int) -> torch.Generator:
    """The generator of video ``index`` of ``split``: :func:`plan_video` draws first, then :func:`render_video`."""
    return torch.Generator().manual_seed(item_seed(config.seed, "synthave", split, index))


def plan_video(config: SynthAVEConfig, g: torch.Generator) -> VideoPlan:
    """Draw a video's class, segment kinds and SNR (the generator's first draws for every video)."""
    class_index = int(torch.randint(config.num_classes, (), generator=g))
    kinds = sample_segment_kinds(config, g)[0]
    snr = uniform(g, *config.snr_db).item()
    return VideoPlan(class_index, kinds, snr)


def render_video(plan: VideoPlan, config: SynthAVEConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(T, 3, S, S)`` uint8 and a waveform ``(T * 16000,)`` float32 for a planned video."""
    spec, steps, nuisance = class_spec(plan.class_index), config.num_segments, config.nuisance
    frames = background_frames(steps, config.image_size, nuisance.num_clutter, g)
    scale = uniform(g, nuisance.min_scale, nuisance.max_scale).item() * 2.0
    margin = 1.0 - scale

    def walk() -> torch.Tensor:  # the object's centre along one axis, drifting from segment to segment
        start = uniform(g, -1.0, 1.0) * margin
        drift = torch.cumsum(uniform(g, -1, 1, steps) * nuisance.position_drift, 0)
        return (start + drift).clamp(-margin, margin).view(steps, 1, 1)

    cx, cy = walk(), walk()
    scales = (scale * (1 + uniform(g, -0.05, 0.05, steps))).view(steps, 1, 1)
    theta = torch.full((steps, 1, 1), uniform(g, -1.0, 1.0).item() * math.radians(nuisance.max_rotation_deg))
    frames = draw_object(frames, spec, plan.visible, cx, cy, scales, theta, nuisance, g)
    frames = finish_frames(frames, nuisance.pixel_noise, g)

    sound = synthesise_class_sound(spec, plan.audible, nuisance, g)
    noise = torch.randn(sound.shape, generator=g)
    gain = 10 ** (uniform(g, *config.gain_db).item() / 20)
    wave = gain * nuisance.noise_rms * (noise + 10 ** (plan.snr_db / 20) * sound)
    return frames, wave


def synth_ave_video(config: SynthAVEConfig, split: str, index: int) -> dict:
    """SynthAVE video ``index`` of ``split``: ``frames`` uint8 ``(T, 3, S, S)``, ``fbank`` float16
    ``(T, mel, frames)``, ``labels`` int64 ``(T,)`` and its :class:`VideoPlan` as ``plan``."""
    g = video_generator(config, split, index)
    plan = plan_video(config, g)
    frames, wave = render_video(plan, config, g)
    fbank = segment_fbank_images(wave, config.fbank, num_segments=config.num_segments)[:, 0]
    labels = torch.where(plan.visible & plan.audible, plan.class_index, config.num_classes).to(torch.int64)
    return {"frames": frames, "fbank": fbank.to(torch.float16), "labels": labels, "plan": plan}


def estimate_fbank_stats(config: SynthAVEConfig, num_videos: int = 40, split: str = "train") -> tuple[float, float]:
    """Mean and standard deviation of the raw log-mel fbank over ``num_videos`` SynthAVE videos.

    The values ``config.fbank`` should carry (like AST's AudioSet statistics, computed on the data).
    """
    raw = FbankConfig(**{**asdict(config.fbank), "mean": 0.0, "std": 0.5})  # (x - 0) / (2 * 0.5) = x
    values = []
    for index in range(num_videos):
        g = video_generator(config, split, index)
        plan = plan_video(config, g)
        _, wave = render_video(plan, config, g)
        values.append(segment_fbank_images(wave, raw, num_segments=config.num_segments)[:, 0].flatten())
    values = torch.cat(values).double()
    return values.mean().item(), values.std().item()


# ---------------------------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------------------------

_CACHED = ("frames", "fbank", "labels")


def _cached_video(config: SynthAVEConfig, split: str, index: int) -> dict:
    video = synth_ave_video(config, split, index)
    return {name: video[name] for name in _CACHED}


class SynthAVE(Dataset):
    """SynthAVE videos as a ``Dataset`` of AVE-style items.

    Args:
        config: the :class:`SynthAVEConfig` (its seed determines every video).
        split: ``"train"`` (``config.num_videos`` videos), ``"val"`` or ``"test"``
            (``config.num_eval_videos``; test: ``config.num_test_videos`` when set).
        cache: ``None`` generates each item when asked (a few milliseconds); ``"memory"`` keeps
            what has been generated; a directory path generates the whole split once, saves it
            there atomically (``synthave-{config.key()}-{environment}-{split}.pt``, see
            :mod:`avpet_core.data.synthetic.cache`) and loads it on later runs.
        cache_workers: processes that generate a split for the disk cache (0: this one).

    Items (the same keys as :class:`avpet_core.data.ave.AVE`): ``frames`` float32 ``(T, 3, S,
    S)`` in ``[0, 1]`` (not normalised), ``audio`` float32 ``(T, 3, mel, frames)`` normalised
    fbank images, ``labels`` int64 ``(T,)`` with background = ``num_event_classes`` (the last
    index), ``video_id`` str. T = 10. PyTorch's default collate function batches them.

    Attributes: ``num_classes`` (K + 1 labels, background included), ``num_event_classes`` (K),
    ``background_index`` (K), ``class_names`` (K + 1 names, the last ``"background"``).
    """

    def __init__(
        self,
        config: SynthAVEConfig = SynthAVEConfig(),
        split: str = "train",
        *,
        cache: str | Path | None = None,
        cache_workers: int = 0,
    ):
        check_split(split)
        self.config, self.split = config, split
        self.num_event_classes = config.num_classes
        self.background_index = config.num_classes
        self.num_classes = config.num_classes + 1
        self.class_names = tuple(class_spec(k).name for k in range(config.num_classes)) + ("background",)
        self._length = config.split_size(split)
        self._memory: dict[int, dict] | None = {} if cache == "memory" else None
        self._stored: dict | None = None
        self.cache_path: Path | None = None
        if cache is not None and cache != "memory":
            self.use_disk_cache(cache, num_workers=cache_workers)

    def use_disk_cache(self, directory: str | Path | None = None, *, num_workers: int = 0) -> "SynthAVE":
        """Read the whole split from its file in ``directory`` (default
        :func:`~avpet_core.data.synthetic.cache.data_cache_dir`), generating it first if there is
        none (with ``num_workers`` processes); returns the dataset."""
        directory = data_cache_dir() if directory is None else Path(directory)
        self.cache_path = split_cache_path(directory, "synthave", self.config.key(), self.split)
        self._stored = self._load_or_build_cache(self.cache_path, num_workers)
        self._memory = None
        return self

    def _load_or_build_cache(self, path: Path, num_workers: int = 0) -> dict:
        if path.is_file():
            return load_split(path, _CACHED, finite=("fbank",))
        ensure_writable(path.parent)  # before the minutes of rendering, not after
        videos = render_items(partial(_cached_video, self.config, self.split), self._length, num_workers)
        stored = {name: torch.stack([v[name] for v in videos]) for name in _CACHED}
        save_split(path, stored)
        return stored

    def __len__(self) -> int:
        return self._length

    def video_id(self, index: int) -> str:
        return f"synthave-{self.split}-{index:05d}"

    def plan(self, index: int) -> VideoPlan:
        """Ground truth of video ``index`` (class, segment kinds), without rendering it."""
        return plan_video(self.config, video_generator(self.config, self.split, index))

    def raw(self, index: int) -> dict:
        """``frames`` uint8, ``fbank`` float16 ``(T, mel, frames)``, ``labels`` of video ``index``."""
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} videos")
        if self._stored is not None:
            return {name: self._stored[name][index] for name in _CACHED}
        if self._memory is not None and index in self._memory:
            return self._memory[index]
        video = synth_ave_video(self.config, self.split, index)
        video.pop("plan")
        if self._memory is not None:
            self._memory[index] = video
        return video

    def __getitem__(self, index: int) -> dict:
        video = self.raw(index)
        fbank = video["fbank"].float()
        return {
            "frames": video["frames"].float() / 255.0,
            "audio": fbank.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(),
            "labels": video["labels"],
            "video_id": self.video_id(index),
        }

    def oracle_accuracy(self, modality: str) -> float:
        """Segment accuracy of the Bayes-optimal one-modality oracle (:func:`oracle_predictions`) on this split."""
        kinds = torch.stack([self.plan(i).kinds for i in range(len(self))])
        predicted = oracle_predictions(kinds, modality, self.config)
        return (predicted == (kinds == EVENT)).double().mean().item()

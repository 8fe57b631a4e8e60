"""SynthAVE and SynthAVQA: offline, seed-determined stand-ins for AVE and MUSIC-AVQA.

**SynthAVE** mirrors AVE (Tian et al., 2018): videos of ten one-second segments, each labelled
with one of K event classes (default 10, at most :data:`MAX_CLASSES` = 28, as in AVE) or
background. Every class has a *look* — a procedurally drawn object: a shape (disc, square,
triangle, cross), a fill texture and a warm or cool palette — and a *sound* — a procedurally
synthesised source (a harmonic tone, a rising sweep, short pips or a noise band) at one of seven
pitch registers. A video belongs to one class; each of its segments is one of four kinds
(:data:`SEGMENT_KINDS`):

=====================  ==========  ===========  =================
kind                   object      its sound    label
=====================  ==========  ===========  =================
``event``              visible     audible      the class
``neither``            absent      silent       background
``visible_silent``     visible     silent       background
``audible_offscreen``  absent      audible      background
=====================  ==========  ===========  =================

so a segment is an event exactly where the object is visible **and** its sound is audible, as in
AVE. The kinds follow a "sticky" Markov chain over the ten segments: the first segment's kind is
drawn from :attr:`SynthAVEConfig.kind_proportions` (default 40 % events and 20 % for each of the
three background kinds, i.e. the background is one third of each kind), and every later segment
keeps the previous kind with probability :attr:`SynthAVEConfig.stickiness` or else is drawn afresh
from the same proportions. Those proportions are the chain's stationary distribution, so they hold
for every segment position; events and backgrounds come in runs, like AVE's intervals.

Because the background kinds disagree across modalities, neither modality alone can label every
segment: audio cannot tell ``event`` from ``audible_offscreen``, vision cannot tell ``event`` from
``visible_silent``. :func:`oracle_accuracies` computes, exactly from the chain, the best expected
segment accuracy of an oracle that sees the ground truth of one modality (the full ten-segment
audible / visible pattern and the class), or of both (which is perfect).

Nuisance variation: object position (with drift from segment to segment), scale, rotation, colour
jitter, background colour, clutter blobs and pixel noise; for sound, white background noise at an
SNR drawn per video from :attr:`SynthAVEConfig.snr_db`, pitch jitter, tempo jitter and an overall
gain.

**SynthAVQA** mirrors MUSIC-AVQA (Li et al., 2022): scenes with one to three instrument-like
objects (each a SynthAVE class's look and sound) placed left / middle / right, each sounding over
an interval of segments or silent, sometimes with an extra off-screen instrument; template
questions in MUSIC-AVQA's nine types, with answers from the fixed vocabulary
:data:`SYNTH_AVQA_ANSWERS` computed from the scene's ground truth. :meth:`SynthAVQA.write_json`
writes them in MUSIC-AVQA's own JSON format, so :class:`avpet_core.data.music_avqa.MusicAVQA`
reads the synthetic and the real dataset alike.

Everything is determined by the config's seed: video ``i`` of split ``s`` draws from a
``torch.Generator`` seeded with a hash of ``(seed, s, i)``, so items can be generated on the fly in
any order (or by any DataLoader worker), or cached to disk (``cache=DIR``) or memory
(``cache="memory"``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from avpet_core.audio import FbankConfig
from avpet_core.data.media import DatasetFormatError, segment_fbank_images
from avpet_core.data.music_avqa import (
    AVQAItems,
    MAX_QUESTION_LENGTH,
    QUESTION_TYPES,
    AVQAQuestion,
    AVQAVocab,
    substitute_placeholders,
    type_name,
)
from avpet_core.data.procedural_images import SHAPES, TEXTURES, _shape_masks, _texture_masks

SAMPLE_RATE = 16_000
NUM_SEGMENTS = 10
MAX_CLASSES = 28
SPLITS = ("train", "val", "test")

# ---------------------------------------------------------------------------------------------
# Filterbank presets. A 1 s segment gives 98 frames of 10 ms; 96 keeps the spectrogram a whole
# number of patches for both backbones (96 = 12 x 8 = 6 x 16), dropping the last 20 ms.
# ---------------------------------------------------------------------------------------------

SYNTH_FBANK_MICRO = FbankConfig(num_mel_bins=64, target_frames=96, mean=-2.93, std=3.09)
"""SynthAVE/SynthAVQA audio for the micro-ViT: 64 mel bins x 96 frames (one second, cropped from 98).

With 8 x 8 patches that is an 8 x 12 grid = 96 audio tokens per segment (beside 36 image tokens),
the smaller of the two sizes that tile exactly (128 x 96 would be 192 tokens for no gain on these
sounds, whose structure is coarse in frequency). The normalisation statistics are SynthAVE's own,
estimated with :func:`estimate_fbank_stats` on 200 train videos of the default config (a test
re-estimates them from other videos).
"""

SYNTH_FBANK_VITB = FbankConfig(num_mel_bins=128, target_frames=96, mean=-3.94, std=3.41)
"""SynthAVE/SynthAVQA audio for ViT-B/16: 128 mel bins x 96 frames = 8 x 6 = 48 patches of 16 x 16,
with SynthAVE's own statistics for 128 bins."""

# ---------------------------------------------------------------------------------------------
# Classes: a look and a sound each.
# ---------------------------------------------------------------------------------------------

PALETTES = ("warm", "cool")
PALETTE_RGB = ((0.90, 0.45, 0.12), (0.15, 0.55, 0.90))
SOUND_SOURCES = ("tone", "sweep", "pips", "noise_band")
REGISTERS_HZ = tuple(220.0 * 1.5**r for r in range(7))  # 220 Hz ... 2.5 kHz, a fifth apart
BASE_TEMPO = {"tone": 2.0, "sweep": 1.5, "pips": 6.0, "noise_band": 3.0}  # events per second


@dataclass(frozen=True)
class ClassSpec:
    """What makes a class recognisable: its object's shape, texture and palette, its sound and pitch."""

    index: int
    shape: str
    texture: str
    palette: str
    sound: str
    pitch_hz: float

    @property
    def name(self) -> str:
        return f"{self.palette} {self.shape}/{self.texture} + {self.sound} {self.pitch_hz:.0f} Hz"


def class_spec(index: int) -> ClassSpec:
    """Class ``index``'s look and sound; unique for every index below :data:`MAX_CLASSES`.

    The look is ``(shape, texture, palette) = (i % 4, (i // 4) % 4, i // 16)`` and the sound
    ``(source, register) = (i % 4, i // 4)``, so no two classes share both, and none shares its look.
    """
    if not 0 <= index < MAX_CLASSES:
        raise ValueError(f"class index {index} outside [0, {MAX_CLASSES})")
    return ClassSpec(
        index=index,
        shape=SHAPES[index % 4],
        texture=TEXTURES[(index // 4) % 4],
        palette=PALETTES[index // 16],
        sound=SOUND_SOURCES[index % 4],
        pitch_hz=REGISTERS_HZ[index // 4],
    )


# ---------------------------------------------------------------------------------------------
# Configuration and seeds.
# ---------------------------------------------------------------------------------------------

SEGMENT_KINDS = ("event", "neither", "visible_silent", "audible_offscreen")
EVENT, NEITHER, VISIBLE_SILENT, AUDIBLE_OFFSCREEN = range(4)
KIND_VISIBLE = torch.tensor([True, False, True, False])
KIND_AUDIBLE = torch.tensor([True, False, False, True])


@dataclass(frozen=True)
class SynthAVEConfig:
    """Everything that determines a SynthAVE dataset. Presets: the default (micro-ViT) and :data:`SYNTH_AVE_VITB`."""

    num_classes: int = 10  # event classes K; the background label is K
    num_videos: int = 600  # train videos
    num_eval_videos: int = 200  # val videos (and test videos unless num_test_videos is set)
    image_size: int = 48
    fbank: FbankConfig = SYNTH_FBANK_MICRO
    seed: int = 0
    num_segments: int = NUM_SEGMENTS
    kind_proportions: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)  # SEGMENT_KINDS order
    stickiness: float = 0.6
    snr_db: tuple[float, float] = (-5.0, 15.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_rms: float = 0.02
    pitch_jitter: float = 0.05  # relative; registers are 50 % apart
    tempo_jitter: float = 0.2  # relative
    min_scale: float = 0.20  # object half-size as a fraction of the image side
    max_scale: float = 0.32
    max_rotation_deg: float = 20.0
    position_drift: float = 0.06  # per-segment random-walk step of the object, in image half-widths
    colour_jitter: float = 0.12
    num_clutter: int = 3
    pixel_noise: float = 0.04
    num_test_videos: int | None = None  # None: num_eval_videos; a test split larger than val costs one evaluation

    def __post_init__(self):
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {self.num_classes}")
        if len(self.kind_proportions) != 4 or abs(sum(self.kind_proportions) - 1) > 1e-6 or min(self.kind_proportions) < 0:
            raise ValueError(f"kind_proportions must be 4 non-negative numbers summing to 1, got {self.kind_proportions}")
        if not 0 <= self.stickiness < 1:
            raise ValueError(f"stickiness must be in [0, 1), got {self.stickiness}")

    def split_size(self, split: str) -> int:
        _check_split(split)
        if split == "test" and self.num_test_videos is not None:
            return self.num_test_videos
        return self.num_videos if split == "train" else self.num_eval_videos

    def key(self) -> str:
        """A short hash of every field, naming cache files."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def background_proportions(self) -> dict[str, float]:
        """Share of each background kind among background segments (default one third each)."""
        background = 1.0 - self.kind_proportions[EVENT]
        return {SEGMENT_KINDS[k]: self.kind_proportions[k] / background for k in (NEITHER, VISIBLE_SILENT, AUDIBLE_OFFSCREEN)}


SYNTH_AVE_VITB = SynthAVEConfig(image_size=224, fbank=SYNTH_FBANK_VITB)
"""SynthAVE at ViT-B/16's input size: 224 px frames, 128 x 96 spectrograms."""


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def item_seed(seed: int, dataset: str, split: str, index: int) -> int:
    """The seed of item ``index`` of ``split``: a hash, so splits and seeds never share a video."""
    digest = hashlib.blake2b(f"{dataset}/{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


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


def _event_joint(observed: torch.Tensor, emits: torch.Tensor, config: SynthAVEConfig) -> tuple[torch.Tensor, torch.Tensor]:
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
# Drawing and synthesis, vectorised over the segments of a video.
# ---------------------------------------------------------------------------------------------


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.linspace(-1.0, 1.0, size)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    return gx, gy


def _object_masks(spec: ClassSpec, gx, gy, cx, cy, scale, theta, g) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and texture masks ``(T, S, S)`` of a class's object at per-segment centres/scales ``(T, 1, 1)``."""
    dx, dy = gx - cx, gy - cy
    lx = (torch.cos(theta) * dx + torch.sin(theta) * dy) / scale
    ly = (-torch.sin(theta) * dx + torch.cos(theta) * dy) / scale
    freq, phase = _uniform(g, 5.0, 9.0).item(), _uniform(g, 0.0, 2 * math.pi).item()
    shape = _shape_masks(lx, ly)[SHAPES.index(spec.shape)]
    texture = _texture_masks(lx, ly, torch.tensor(freq), torch.tensor(phase))[TEXTURES.index(spec.texture)]
    return shape, texture


def _object_colours(spec: ClassSpec, jitter: float, g) -> tuple[torch.Tensor, torch.Tensor]:
    fill = (torch.tensor(PALETTE_RGB[PALETTES.index(spec.palette)]) + _uniform(g, -jitter, jitter, 3)).clamp(0, 1)
    second = torch.where(fill < 0.5, fill + 0.35, fill - 0.35)
    return fill.view(3, 1, 1), second.view(3, 1, 1)


def _background_frames(steps: int, size: int, clutter: int, config: SynthAVEConfig, g) -> torch.Tensor:
    """Frames ``(T, 3, S, S)`` of a greyish background with drifting clutter blobs."""
    gx, gy = _grid(size)
    grey = _uniform(g, 0.15, 0.85).item()
    base = (grey + _uniform(g, -0.08, 0.08, 3)).clamp(0, 1).view(1, 3, 1, 1)
    frames = (base + _uniform(g, -0.03, 0.03, steps, 1, 1, 1)).expand(steps, 3, size, size).clone()
    for _ in range(clutter):
        ox = (_uniform(g, -0.85, 0.85) + torch.cumsum(_uniform(g, -0.05, 0.05, steps), 0)).view(steps, 1, 1)
        oy = (_uniform(g, -0.85, 0.85) + torch.cumsum(_uniform(g, -0.05, 0.05, steps), 0)).view(steps, 1, 1)
        half = _uniform(g, 0.05, 0.12).item()
        if torch.rand((), generator=g) < 0.5:
            blob = ((gx - ox).abs() < half) & ((gy - oy).abs() < half)
        else:
            blob = (gx - ox) ** 2 + (gy - oy) ** 2 < half**2
        frames = torch.where(blob.unsqueeze(1), _uniform(g, 0.0, 1.0, 3).view(1, 3, 1, 1), frames)
    return frames


def _finish_frames(frames: torch.Tensor, noise: float, g) -> torch.Tensor:
    """Add pixel noise and quantise to ``uint8`` like a decoded video frame."""
    frames = frames + noise * torch.randn(frames.shape, generator=g)
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def draw_object(
    frames: torch.Tensor, spec: ClassSpec, present: torch.Tensor, cx, cy, scale, theta, config: SynthAVEConfig, g
) -> torch.Tensor:
    """Paint ``spec``'s object into ``frames`` ``(T, 3, S, S)`` where ``present`` ``(T,)`` is true."""
    gx, gy = _grid(frames.shape[-1])
    shape, texture = _object_masks(spec, gx, gy, cx, cy, scale, theta, g)
    fill, second = _object_colours(spec, config.colour_jitter, g)
    paint = torch.where(texture.unsqueeze(1), second, fill)
    where = (shape & present.view(-1, 1, 1)).unsqueeze(1)
    return torch.where(where, paint, frames)


def synthesise_class_sound(spec: ClassSpec, gate: torch.Tensor, config: SynthAVEConfig, g: torch.Generator) -> torch.Tensor:
    """A class's sound over the whole clip, switched on where ``gate`` ``(T,)`` is true.

    Returns a float32 waveform of ``T`` seconds at 16 kHz, scaled to unit RMS over its sounding
    part (zero if it never sounds). Pitch (``pitch_jitter``) and tempo (``tempo_jitter``) vary per
    call; switching on and off uses 10 ms ramps. Phases are computed in float64 as whole cycles
    and wrapped before the float32 ``sin``, which keeps a ten-second tone exact and fast.
    """
    steps = gate.numel()
    n = steps * SAMPLE_RATE
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    pitch = spec.pitch_hz * (1 + config.pitch_jitter * _uniform(g, -1.0, 1.0).item())
    tempo = BASE_TEMPO[spec.sound] * (1 + config.tempo_jitter * _uniform(g, -1.0, 1.0).item())
    period = 1.0 / tempo
    shifted = t + _uniform(g, 0.0, period).item()
    local = torch.remainder(shifted, period).float()  # seconds since the last onset
    two_pi = 2 * math.pi

    def wrapped_cycles(cycles: torch.Tensor) -> torch.Tensor:
        return torch.frac(cycles).float()

    if spec.sound == "tone":  # notes: a fundamental and three decaying harmonics, each note decays
        cycles = wrapped_cycles(pitch * t)
        wave = sum(0.6**h * torch.sin(two_pi * torch.frac((h + 1) * cycles)) for h in range(4))
        wave = wave * torch.exp(-local / (0.35 * period)) * (1 - torch.exp(-local / 0.005))
    elif spec.sound == "sweep":  # an octave glide up every period: f = pitch * 2 ** (local / period)
        per_glide = pitch * period / math.log(2.0)  # cycles in one glide
        cycles = per_glide * (torch.floor(shifted / period) + torch.pow(2.0, local.double() / period) - 1.0)
        wave = torch.sin(two_pi * wrapped_cycles(cycles))
    elif spec.sound == "pips":  # short tone pips, fast decay
        wave = torch.sin(two_pi * wrapped_cycles(pitch * t)) * torch.exp(-local / 0.02)
    else:  # noise_band: noise band-passed to +-20 % around the pitch, with a tremolo at the tempo
        spectrum = torch.fft.rfft(torch.randn(n, generator=g))
        freqs = torch.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
        spectrum = spectrum * ((freqs - pitch).abs() < 0.2 * pitch)
        wave = torch.fft.irfft(spectrum, n) * (0.6 + 0.4 * torch.sin(two_pi * wrapped_cycles(tempo * t)))
    # On/off with 10 ms linear ramps: a moving average of the gate, via a cumulative sum.
    on = gate.float().repeat_interleave(SAMPLE_RATE)
    if not bool(gate.any()):
        return torch.zeros(n, dtype=torch.float32)
    width = 161
    summed = torch.cumsum(torch.nn.functional.pad(on.double(), (width // 2 + 1, width // 2)), 0)
    ramp = ((summed[width:] - summed[:-width]) / width).float()
    wave = wave * ramp
    rms = wave[on > 0].pow(2).mean().sqrt()
    return wave / rms.clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------
# SynthAVE.
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


def plan_video(config: SynthAVEConfig, g: torch.Generator) -> VideoPlan:
    """Draw a video's class, segment kinds and SNR (the generator's first draws for every video)."""
    class_index = int(torch.randint(config.num_classes, (), generator=g))
    kinds = sample_segment_kinds(config, g)[0]
    snr = _uniform(g, *config.snr_db).item()
    return VideoPlan(class_index, kinds, snr)


def render_video(plan: VideoPlan, config: SynthAVEConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(T, 3, S, S)`` uint8 and a waveform ``(T * 16000,)`` float32 for a planned video."""
    spec, steps = class_spec(plan.class_index), config.num_segments
    frames = _background_frames(steps, config.image_size, config.num_clutter, config, g)
    scale = _uniform(g, config.min_scale, config.max_scale).item() * 2.0
    margin = 1.0 - scale
    walk = lambda: (_uniform(g, -1.0, 1.0) * margin + torch.cumsum(_uniform(g, -1, 1, steps) * config.position_drift, 0)).clamp(
        -margin, margin
    )
    cx, cy = walk().view(steps, 1, 1), walk().view(steps, 1, 1)
    scales = (scale * (1 + _uniform(g, -0.05, 0.05, steps))).view(steps, 1, 1)
    theta = torch.full((steps, 1, 1), _uniform(g, -1.0, 1.0).item() * math.radians(config.max_rotation_deg))
    frames = draw_object(frames, spec, plan.visible, cx, cy, scales, theta, config, g)
    frames = _finish_frames(frames, config.pixel_noise, g)

    sound = synthesise_class_sound(spec, plan.audible, config, g)
    noise = torch.randn(sound.shape, generator=g)
    gain = 10 ** (_uniform(g, *config.gain_db).item() / 20)
    wave = gain * config.noise_rms * (noise + 10 ** (plan.snr_db / 20) * sound)
    return frames, wave


def synth_ave_video(config: SynthAVEConfig, split: str, index: int) -> dict:
    """SynthAVE video ``index`` of ``split``: ``frames`` uint8 ``(T, 3, S, S)``, ``fbank`` float16
    ``(T, mel, frames)``, ``labels`` int64 ``(T,)`` and its :class:`VideoPlan` as ``plan``."""
    g = torch.Generator().manual_seed(item_seed(config.seed, "synthave", split, index))
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
        g = torch.Generator().manual_seed(item_seed(config.seed, "synthave", split, index))
        plan = plan_video(config, g)
        _, wave = render_video(plan, config, g)
        values.append(segment_fbank_images(wave, raw, num_segments=config.num_segments)[:, 0].flatten())
    values = torch.cat(values).double()
    return values.mean().item(), values.std().item()


def _load_cache(path: Path) -> dict:
    try:
        stored = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise DatasetFormatError(f"{path}: unreadable dataset cache ({type(err).__name__}); delete it to regenerate") from err
    for name in ("frames", "fbank", "labels"):
        if name not in stored:
            raise DatasetFormatError(f"{path}: dataset cache lacks {name!r}; delete it to regenerate")
    if not torch.isfinite(stored["fbank"].float()).all():
        raise DatasetFormatError(f"{path}: NaN or infinite values in the cached audio features; delete it to regenerate")
    return stored


class SynthAVE(Dataset):
    """SynthAVE videos as a ``Dataset`` of AVE-style items.

    Args:
        config: the :class:`SynthAVEConfig` (its seed determines every video).
        split: ``"train"`` (``config.num_videos`` videos), ``"val"`` or ``"test"``
            (``config.num_eval_videos``; test: ``config.num_test_videos`` when set).
        cache: ``None`` generates each item when asked (a few milliseconds); ``"memory"`` keeps
            what has been generated; a directory path generates the whole split once, saves it
            there atomically (``synthave-{config.key()}-{split}.pt``) and loads it on later runs.

    Items (the same keys as :class:`avpet_core.data.ave.AVE`): ``frames`` float32 ``(T, 3, S,
    S)`` in ``[0, 1]`` (not normalised), ``audio`` float32 ``(T, 3, mel, frames)`` normalised
    fbank images, ``labels`` int64 ``(T,)`` with background = ``num_event_classes`` (the last
    index), ``video_id`` str. T = 10. PyTorch's default collate function batches them.

    Attributes: ``num_classes`` (K + 1 labels, background included), ``num_event_classes`` (K),
    ``background_index`` (K), ``class_names`` (K + 1 names, the last ``"background"``).
    """

    def __init__(self, config: SynthAVEConfig = SynthAVEConfig(), split: str = "train", *, cache: str | Path | None = None):
        _check_split(split)
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
            self.cache_path = Path(cache) / f"synthave-{config.key()}-{split}.pt"
            self._stored = self._load_or_build_cache(self.cache_path)

    def _load_or_build_cache(self, path: Path) -> dict:
        from avpet_core.pretrain import atomic_write_bytes, ensure_writable

        if path.is_file():
            return _load_cache(path)
        ensure_writable(path.parent)
        videos = [synth_ave_video(self.config, self.split, i) for i in range(self._length)]
        stored = {name: torch.stack([v[name] for v in videos]) for name in ("frames", "fbank", "labels")}
        buffer = io.BytesIO()
        torch.save(stored, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return stored

    def __len__(self) -> int:
        return self._length

    def video_id(self, index: int) -> str:
        return f"synthave-{self.split}-{index:05d}"

    def plan(self, index: int) -> VideoPlan:
        """Ground truth of video ``index`` (class, segment kinds), without rendering it."""
        g = torch.Generator().manual_seed(item_seed(self.config.seed, "synthave", self.split, index))
        return plan_video(self.config, g)

    def raw(self, index: int) -> dict:
        """``frames`` uint8, ``fbank`` float16 ``(T, mel, frames)``, ``labels`` of video ``index``."""
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} videos")
        if self._stored is not None:
            return {name: self._stored[name][index] for name in ("frames", "fbank", "labels")}
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


# ---------------------------------------------------------------------------------------------
# SynthAVQA.
# ---------------------------------------------------------------------------------------------

INSTRUMENTS = ("drum", "bell", "horn", "flute", "violin", "piano", "guitar", "cello")
INSTRUMENT_CLASSES = (0, 1, 2, 3, 16, 17, 18, 19)
"""SynthAVE class of each instrument: four shapes x two palettes, solid fill, four sound sources."""

POSITIONS = ("left", "middle", "right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
SYNTH_AVQA_ANSWERS = ("yes", "no", *NUMBER_WORDS, *POSITIONS, *INSTRUMENTS)
"""The fixed answer vocabulary every SynthAVQA answer comes from."""

TEMPLATES: dict[tuple[str, str], str] = {
    ("Audio", "Counting"): "How many instruments can be heard in the video?",
    ("Audio", "Comparative"): "Is the <Object> louder than the <Object>?",
    ("Visual", "Counting"): "How many <Object> are in the video?",
    ("Visual", "Location"): "What is the <LR> instrument?",
    ("Audio-Visual", "Existential"): "Is the <Object> in the video playing?",
    ("Audio-Visual", "Counting"): "How many instruments in the video are playing?",
    ("Audio-Visual", "Location"): "Where is the instrument that starts playing <TH>?",
    ("Audio-Visual", "Comparative"): "Is the <LR> instrument louder than the <LR> instrument?",
    ("Audio-Visual", "Temporal"): "Which instrument in the video starts playing <BA> the <Object>?",
}
"""One template per MUSIC-AVQA question type, with MUSIC-AVQA's placeholders."""


@dataclass(frozen=True)
class SynthAVQAConfig:
    """Everything that determines a SynthAVQA dataset."""

    num_scenes: int = 300  # train scenes
    num_eval_scenes: int = 100  # val scenes (and test scenes unless num_test_scenes is set)
    questions_per_scene: int = 4
    image_size: int = 48
    fbank: FbankConfig = SYNTH_FBANK_MICRO
    seed: int = 0
    num_segments: int = NUM_SEGMENTS
    offscreen_probability: float = 0.3  # chance of an extra instrument heard but not seen
    silent_probability: float = 0.25  # chance that an on-screen instrument never plays
    snr_db: tuple[float, float] = (5.0, 15.0)  # of a loud instrument; quiet ones are 10 dB lower
    max_question_length: int = MAX_QUESTION_LENGTH
    num_test_scenes: int | None = None  # None: num_eval_scenes
    # Drawing and sound nuisances shared with SynthAVE.
    ave: SynthAVEConfig = field(default_factory=lambda: SynthAVEConfig(min_scale=0.12, max_scale=0.15, position_drift=0.02))

    def split_size(self, split: str) -> int:
        _check_split(split)
        if split == "test" and self.num_test_scenes is not None:
            return self.num_test_scenes
        return self.num_scenes if split == "train" else self.num_eval_scenes


@dataclass(frozen=True)
class Source:
    """One instrument of a scene: where it is (``None``: off-screen), when it plays, how loud."""

    instrument: int  # index into INSTRUMENTS
    position: int | None  # index into POSITIONS, None if off-screen
    onset: int  # first sounding segment
    offset: int  # one past the last; onset == offset means silent throughout
    loud: bool

    @property
    def sounds(self) -> bool:
        return self.offset > self.onset


@dataclass(frozen=True)
class Scene:
    sources: tuple[Source, ...]

    @property
    def on_screen(self) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.position is not None)


def plan_scene(config: SynthAVQAConfig, g: torch.Generator) -> Scene:
    """Draw a scene: 1-3 on-screen instruments at distinct positions, maybe one off-screen."""
    steps = config.num_segments
    count = int(torch.randint(1, 4, (), generator=g))
    positions = sorted(torch.randperm(3, generator=g)[:count].tolist())
    sources = []

    def timing() -> tuple[int, int]:
        onset = int(torch.randint(0, steps - 2, (), generator=g))
        offset = int(torch.randint(onset + 2, steps + 1, (), generator=g))
        return onset, offset

    for position in positions:
        instrument = int(torch.randint(len(INSTRUMENTS), (), generator=g))
        onset, offset = timing()
        if torch.rand((), generator=g) < config.silent_probability:
            onset = offset = 0
        sources.append(Source(instrument, position, onset, offset, bool(torch.rand((), generator=g) < 0.5)))
    if torch.rand((), generator=g) < config.offscreen_probability:
        instrument = int(torch.randint(len(INSTRUMENTS), (), generator=g))
        onset, offset = timing()
        sources.append(Source(instrument, None, onset, offset, bool(torch.rand((), generator=g) < 0.5)))
    return Scene(tuple(sources))


def _unique(items: list) -> list:
    return [x for x in items if items.count(x) == 1]


def scene_questions(scene: Scene) -> list[tuple[int, list[str], str]]:
    """Every question the templates can ask about ``scene``: ``(type_index, templ_values, answer)``.

    A question is only asked when its answer is well defined (the instruments it names are unique
    where it matters, onsets and loudness differ, ...).
    """
    questions: list[tuple[int, list[str], str]] = []
    ask = lambda group, kind, values, answer: questions.append((QUESTION_TYPES.index((group, kind)), values, answer))
    sounding = [s for s in scene.sources if s.sounds]
    seen = scene.on_screen
    seen_sounding = [s for s in seen if s.sounds]

    ask("Audio", "Counting", [], NUMBER_WORDS[len(sounding)])
    heard_once = _unique([s.instrument for s in sounding])
    for a in heard_once:
        for b in heard_once:
            sa = next(s for s in sounding if s.instrument == a)
            sb = next(s for s in sounding if s.instrument == b)
            if a != b and sa.loud != sb.loud:
                ask("Audio", "Comparative", [INSTRUMENTS[a], INSTRUMENTS[b]], "yes" if sa.loud else "no")
    present = sorted({s.instrument for s in seen})
    absent = [i for i in range(len(INSTRUMENTS)) if i not in present]
    for instrument in present + absent[:1]:
        plural = INSTRUMENTS[instrument] + "s"
        ask("Visual", "Counting", [plural], NUMBER_WORDS[sum(s.instrument == instrument for s in seen)])
    for s in seen:
        ask("Visual", "Location", [POSITIONS[s.position]], INSTRUMENTS[s.instrument])
    for instrument in _unique([s.instrument for s in seen]) + [s.instrument for s in scene.sources if s.position is None]:
        if [s.instrument for s in seen].count(instrument) <= 1:
            playing = any(s.instrument == instrument and s.sounds for s in seen)
            ask("Audio-Visual", "Existential", [INSTRUMENTS[instrument]], "yes" if playing else "no")
    ask("Audio-Visual", "Counting", [], NUMBER_WORDS[len(seen_sounding)])
    for word, pick in (("first", min), ("last", max)):
        if sounding:
            extreme = pick(s.onset for s in sounding)
            starters = [s for s in sounding if s.onset == extreme]
            if len(starters) == 1 and starters[0].position is not None:
                ask("Audio-Visual", "Location", [word], POSITIONS[starters[0].position])
    for a in seen_sounding:
        for b in seen_sounding:
            if a is not b and a.loud != b.loud:
                ask("Audio-Visual", "Comparative", [POSITIONS[a.position], POSITIONS[b.position]], "yes" if a.loud else "no")
    onsets = [s.onset for s in seen_sounding]
    named = _unique([s.instrument for s in seen_sounding])
    if len(set(onsets)) == len(onsets) and len(named) == len(seen_sounding) >= 2:
        ordered = sorted(seen_sounding, key=lambda s: s.onset)
        for i, s in enumerate(ordered):
            if i > 0:
                ask("Audio-Visual", "Temporal", ["before", INSTRUMENTS[s.instrument]], INSTRUMENTS[ordered[i - 1].instrument])
            if i + 1 < len(ordered):
                ask("Audio-Visual", "Temporal", ["after", INSTRUMENTS[s.instrument]], INSTRUMENTS[ordered[i + 1].instrument])
    return questions


def _choose_questions(candidates: list, count: int, g: torch.Generator) -> list:
    """Pick up to ``count`` questions, spreading them over types: a random type, then a random question of it."""
    by_type: dict[int, list] = {}
    for q in candidates:
        by_type.setdefault(q[0], []).append(q)
    chosen = []
    while by_type and len(chosen) < count:
        types = sorted(by_type)
        kind = types[int(torch.randint(len(types), (), generator=g))]
        pool = by_type[kind]
        chosen.append(pool.pop(int(torch.randint(len(pool), (), generator=g))))
        if not pool:
            del by_type[kind]
    return chosen


def render_scene(scene: Scene, config: SynthAVQAConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(T, 3, S, S)`` uint8 and a waveform ``(T * 16000,)`` for a scene."""
    ave, steps = config.ave, config.num_segments
    frames = _background_frames(steps, config.image_size, ave.num_clutter, ave, g)
    wave = torch.randn(steps * SAMPLE_RATE, generator=g)
    snr = _uniform(g, *config.snr_db).item()
    for source in scene.sources:
        spec = class_spec(INSTRUMENT_CLASSES[source.instrument])
        if source.position is not None:
            scale = _uniform(g, ave.min_scale, ave.max_scale).item() * 2.0
            cx = torch.full((steps, 1, 1), (source.position - 1) * 0.62 + _uniform(g, -0.04, 0.04).item())
            cy = _uniform(g, -0.3, 0.3).item() + torch.cumsum(_uniform(g, -1, 1, steps) * ave.position_drift, 0).view(steps, 1, 1)
            theta = torch.full((steps, 1, 1), _uniform(g, -1.0, 1.0).item() * math.radians(ave.max_rotation_deg))
            frames = draw_object(frames, spec, torch.ones(steps, dtype=torch.bool), cx, cy, torch.full((steps, 1, 1), scale), theta, ave, g)
        gate = torch.zeros(steps, dtype=torch.bool)
        gate[source.onset : source.offset] = True
        level = snr if source.loud else snr - 10.0
        wave = wave + 10 ** (level / 20) * synthesise_class_sound(spec, gate, ave, g)
    frames = _finish_frames(frames, ave.pixel_noise, g)
    return frames, wave * ave.noise_rms


def synth_avqa_scene(config: SynthAVQAConfig, split: str, index: int) -> tuple[Scene, torch.Generator]:
    """Scene ``index`` of ``split``, and the generator (after the scene's draws) that picks its questions.

    The scene's pixels and sound are drawn from a second generator (see :class:`SynthAVQAMedia`),
    so the questions can be listed without rendering any video.
    """
    g = torch.Generator().manual_seed(item_seed(config.seed, "synthavqa", split, index))
    return plan_scene(config, g), g


def synth_avqa_video_id(split: str, index: int) -> str:
    return f"synthavqa-{split}-{index:05d}"


class SynthAVQAMedia:
    """A media source for :class:`~avpet_core.data.music_avqa.MusicAVQA`: renders a SynthAVQA video by id.

    ``media(video_id) -> (frames (T, 3, S, S) float32 in [0, 1], audio (T, 3, mel, frames))``. The
    most recent videos are kept, since consecutive questions often share one.
    """

    def __init__(self, config: "SynthAVQAConfig", keep: int = 8):
        self.config, self.keep = config, keep
        self._recent: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if video_id in self._recent:
            frames, audio = self._recent[video_id]
        else:
            frames, audio = self._render(video_id)
            if self.keep > 0:
                if len(self._recent) >= self.keep:
                    self._recent.pop(next(iter(self._recent)))
                self._recent[video_id] = (frames, audio)
        return frames.float() / 255.0, audio.float().expand(-1, 3, -1, -1).contiguous()

    def _render(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` uint8 and single-channel float16 fbank images ``(T, 1, mel, frames)`` of a video."""
        try:
            _, split, index = video_id.split("-")
            _check_split(split)
            index = int(index)
        except ValueError as err:
            raise DatasetFormatError(f"{video_id!r} is not a SynthAVQA video id (synthavqa-SPLIT-INDEX)") from err
        scene, _ = synth_avqa_scene(self.config, split, index)
        render_generator = torch.Generator().manual_seed(item_seed(self.config.seed, "synthavqa-media", split, index))
        frames, wave = render_scene(scene, self.config, render_generator)
        audio = segment_fbank_images(wave, self.config.fbank, num_segments=self.config.num_segments, source=video_id)
        return frames, audio[:, :1].to(torch.float16)


class SynthAVQA(AVQAItems):
    """SynthAVQA questions as a ``Dataset`` of AVQA-style items (the same as :class:`~avpet_core.data.music_avqa.MusicAVQA`'s).

    Args:
        config: the :class:`SynthAVQAConfig`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        vocab: the train split's :class:`~avpet_core.data.music_avqa.AVQAVocab`; ``None`` builds
            the question words from the train split of this config (as MUSIC-AVQA does), whatever
            ``split`` is, and takes the fixed answer list :data:`SYNTH_AVQA_ANSWERS`.
        keep_videos: rendered videos kept in memory (:class:`SynthAVQAMedia`); the default keeps the
            last few, which serves consecutive questions about one video; ``None`` keeps every
            video of the split (about 0.2 MB each at the micro-ViT's sizes), so that training
            epochs after the first render nothing.

    Items: ``frames``, ``audio``, ``question`` (padded with 0), ``question_length``, ``answer``,
    ``type`` (index into :data:`~avpet_core.data.music_avqa.QUESTION_TYPES`), ``question_id``,
    ``video_id``. ``questions`` holds the parsed questions and ``scenes`` their ground truth.
    """

    def __init__(
        self,
        config: SynthAVQAConfig = SynthAVQAConfig(),
        split: str = "train",
        *,
        vocab: AVQAVocab | None = None,
        keep_videos: int | None = 8,
    ):
        _check_split(split)
        self.config, self.split = config, split
        self.scenes, self.questions, self.templ_values = self._make_questions(split)
        if vocab is None:
            train_questions = self.questions if split == "train" else self._make_questions("train")[1]
            vocab = AVQAVocab.from_questions(train_questions, answers=SYNTH_AVQA_ANSWERS)
        self.vocab = vocab
        self.answer_ids = [vocab.answer_index(q.answer, where=q.where) for q in self.questions]
        self.type_counts = Counter(type_name(q.type_index) for q in self.questions)
        self.media = SynthAVQAMedia(config, keep=config.split_size(split) if keep_videos is None else keep_videos)
        self.max_question_length = config.max_question_length

    def _make_questions(self, split: str) -> tuple[list[Scene], list[AVQAQuestion], list[list[str]]]:
        scenes, questions, templ_values = [], [], []
        for index in range(self.config.split_size(split)):
            scene, g = synth_avqa_scene(self.config, split, index)
            scenes.append(scene)
            for type_index, values, answer in _choose_questions(scene_questions(scene), self.config.questions_per_scene, g):
                template = TEMPLATES[QUESTION_TYPES[type_index]]
                question_id = len(questions)
                questions.append(
                    AVQAQuestion(
                        video_id=synth_avqa_video_id(split, index),
                        question_id=question_id,
                        type_index=type_index,
                        question=substitute_placeholders(template, values),
                        answer=answer,
                        template=template,
                        where=f"SynthAVQA {split}: question {question_id}",
                    )
                )
                templ_values.append(values)
        return scenes, questions, templ_values

    def music_avqa_records(self) -> list[dict]:
        """The questions as MUSIC-AVQA JSON objects (``type`` and ``templ_values`` as JSON strings, ``anser`` sic)."""
        return [
            {
                "video_id": q.video_id,
                "question_id": q.question_id,
                "type": json.dumps(list(QUESTION_TYPES[q.type_index])),
                "question_content": q.template,
                "templ_values": json.dumps(values),
                "anser": q.answer,
                "question_deleted": 0,
            }
            for q, values in zip(self.questions, self.templ_values)
        ]

    def write_json(self, path: str | Path) -> Path:
        """Write the questions in MUSIC-AVQA's JSON format (atomically); returns the path."""
        from avpet_core.pretrain import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.music_avqa_records(), indent=1).encode())
        return path

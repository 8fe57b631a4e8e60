"""The two settings a row runs in — offline and the paper's — as one table of values.

A run is *offline* with the micro-ViT (the book's short CPU runs on synthetic data at its sizes) and
in the *paper's* setting with any other backbone (data at ViT-B/16's sizes, the paper's
optimisation). :func:`profile_for` decides which, once, from the backbone's name; everything that
differs between the two is a field of :class:`Profile`, read where it is needed:

===================  ===================================  ========================================
field                offline (:data:`OFFLINE`)            paper (:data:`PAPER`)
===================  ===================================  ========================================
``synthetic_sizes``  none: the experiment's own data      224 px frames, 128 x 96 spectrograms,
                     config (48 px, 64 mel bins)          ten segments
``real_media``       :data:`~avpet_core.data.ave.AVE_MICRO`  :class:`~avpet_core.data.ave.AVEMediaConfig`
                     (48 px, 64 x 96)                     (224 px, 128 x 1024 frames)
``narrow_heads``     the experiment's ``head_hidden``     each head's own width (AVST's 512)
``training``         none: the experiment's own           :data:`PAPER_TRAINING` (15 epochs, 3e-4)
``text_encoder``     ``micro_text``                       ``bert-base-uncased``
``local_weights``    pretrained by default (cached)       random unless asked (timm downloads)
``bench_cpu_batch``  16 clips                             4 clips
===================  ===================================  ========================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from avpet_core.audio import FbankConfig
from avpet_core.backbones.micro_vit import MICRO_VIT
from avpet_core.backbones.text import MICRO_TEXT
from avpet_core.data.ave import AVE_MICRO, AVEMediaConfig
from avpet_core.data.synthetic import NUM_SEGMENTS, SYNTH_AVE_VITB
from avpet_core.train import TrainConfig

PAPER_TRAINING = TrainConfig(epochs=15, batch_size=16, model_lr=3e-4, head_lr=3e-4, device="cuda")
"""The paper's optimisation (AV-PEA: AdamW at 3e-4, 15 epochs, batch 16, on a GPU)."""

PAPER_TEXT_ENCODER = "bert-base-uncased"
"""The language encoder of the trimodal rows with a paper backbone (offline: ``micro_text``)."""


@dataclass(frozen=True)
class SyntheticSizes:
    """What the paper's setting changes in a synthetic data config (SynthAVE, SynthAVQA)."""

    image_size: int
    fbank: FbankConfig
    num_segments: int


@dataclass(frozen=True)
class Profile:
    """The values of one setting (the module's table).

    Attributes:
        name: ``"offline"`` or ``"paper"``.
        synthetic_sizes: the sizes synthetic data take (``None``: each experiment's own config).
        real_media: how real videos (AVE, MUSIC-AVQA) become tensors.
        narrow_heads: heads take the experiment's ``head_hidden`` width (else their own default).
        training: the optimisation of every row (``None``: each experiment's own).
        text_encoder: the language encoder of the trimodal rows, unless a run names one.
        local_weights: the backbone's pretrained weights are on this machine (cached), so a run
            is pretrained unless asked otherwise; else random unless asked (they download).
        bench_cpu_batch: the benchmark's batch on a CPU (clips).
    """

    name: str
    synthetic_sizes: SyntheticSizes | None
    real_media: AVEMediaConfig
    narrow_heads: bool
    training: TrainConfig | None
    text_encoder: str
    local_weights: bool
    bench_cpu_batch: int

    @property
    def offline(self) -> bool:
        return self.name == "offline"

    def synthetic(self, config):
        """A synthetic data config at this profile's sizes (offline: as it is)."""
        if self.synthetic_sizes is None:
            return config
        sizes = self.synthetic_sizes
        return replace(config, image_size=sizes.image_size, fbank=sizes.fbank, num_segments=sizes.num_segments)

    def head_width(self, experiment_hidden: int) -> int | None:
        """The head's width: the experiment's offline, ``None`` (the head's own) in the paper's setting."""
        return experiment_hidden if self.narrow_heads else None

    def training_for(self, experiment_training: TrainConfig) -> TrainConfig:
        """The optimisation of a row: the experiment's own, or the profile's."""
        return experiment_training if self.training is None else self.training


OFFLINE = Profile(
    "offline",
    synthetic_sizes=None,
    real_media=AVE_MICRO,
    narrow_heads=True,
    training=None,
    text_encoder=MICRO_TEXT,
    local_weights=True,
    bench_cpu_batch=16,
)
PAPER = Profile(
    "paper",
    SyntheticSizes(SYNTH_AVE_VITB.image_size, SYNTH_AVE_VITB.fbank, NUM_SEGMENTS),
    real_media=AVEMediaConfig(),
    narrow_heads=False,
    training=PAPER_TRAINING,
    text_encoder=PAPER_TEXT_ENCODER,
    local_weights=False,
    bench_cpu_batch=4,
)
PROFILES: dict[str, Profile] = {p.name: p for p in (OFFLINE, PAPER)}


def profile_for(backbone: str) -> Profile:
    """Offline for the micro-ViT, the paper's setting for any other backbone: decided here, once."""
    return OFFLINE if backbone == MICRO_VIT else PAPER

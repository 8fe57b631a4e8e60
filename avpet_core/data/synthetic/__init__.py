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

The package, by concern:

* :mod:`~avpet_core.data.synthetic.seeds` — splits, item seeds, uniform draws;
* :mod:`~avpet_core.data.synthetic.nuisance` — :class:`NuisanceConfig`, the drawing and sound
  nuisances both datasets share (:class:`SynthAVEConfig` takes them as its own fields,
  :class:`SynthAVQAConfig` holds one in ``nuisance``);
* :mod:`~avpet_core.data.synthetic.drawing` — shape and texture masks (shared with
  :mod:`avpet_core.data.procedural_images`), backgrounds, objects, pixel noise;
* :mod:`~avpet_core.data.synthetic.sound` — sound synthesis and the filterbank presets;
* :mod:`~avpet_core.data.synthetic.classes` — each class's look and sound;
* :mod:`~avpet_core.data.synthetic.ave` — SynthAVE: config, segment kinds, oracles, dataset;
* :mod:`~avpet_core.data.synthetic.avqa` — SynthAVQA: config, scenes, questions, media, dataset.
"""

from avpet_core.data.synthetic.ave import (
    AUDIBLE_OFFSCREEN,
    EVENT,
    KIND_AUDIBLE,
    KIND_VISIBLE,
    NEITHER,
    SEGMENT_KINDS,
    SYNTH_AVE_VITB,
    VISIBLE_SILENT,
    SynthAVE,
    SynthAVEConfig,
    VideoPlan,
    estimate_fbank_stats,
    kind_transition_matrix,
    oracle_accuracies,
    oracle_predictions,
    plan_video,
    render_video,
    sample_segment_kinds,
    synth_ave_video,
)
from avpet_core.data.synthetic.avqa import (
    INSTRUMENT_CLASSES,
    INSTRUMENTS,
    NUMBER_WORDS,
    POSITIONS,
    SYNTH_AVQA_ANSWERS,
    TEMPLATES,
    Scene,
    Source,
    SynthAVQA,
    SynthAVQAConfig,
    SynthAVQAMedia,
    plan_scene,
    render_scene,
    scene_questions,
    synth_avqa_scene,
    synth_avqa_video_id,
)
from avpet_core.data.synthetic.classes import MAX_CLASSES, ClassSpec, class_spec
from avpet_core.data.synthetic.drawing import PALETTE_RGB, PALETTES, SHAPES, TEXTURES, draw_object
from avpet_core.data.synthetic.nuisance import NuisanceConfig
from avpet_core.data.synthetic.seeds import NUM_SEGMENTS, SPLITS, item_seed
from avpet_core.data.synthetic.sound import (
    BASE_TEMPO,
    REGISTERS_HZ,
    SAMPLE_RATE,
    SOUND_SOURCES,
    SYNTH_FBANK_MICRO,
    SYNTH_FBANK_VITB,
    synthesise_class_sound,
)

_SUBMODULES = {"ave", "avqa", "classes", "drawing", "nuisance", "seeds", "sound"}
__all__ = [name for name in dir() if not name.startswith("_") and name not in _SUBMODULES]

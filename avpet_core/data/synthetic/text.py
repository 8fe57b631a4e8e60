"""Text about the synthetic world: the corpus the offline language encoder is pretrained on.

The paper's language encoder was pretrained on real text. Offline, the book pretrains a small one
(:mod:`avpet_core.backbones.micro_text`) by masked-language modelling on English about SynthAVE and
SynthAVQA, of three kinds (:data:`TEXT_KINDS`):

* ``"question"`` — every question SynthAVQA's templates can ask (:data:`~.avqa.TEMPLATES`, each
  placeholder filled with every value :func:`~.avqa.scene_questions` can put there):
  ``"is the drum louder than the bell?"``. A fixed share of them (:attr:`TextCorpusConfig.held_out_questions`,
  chosen by the seed) is held out of training.
* ``"ave"`` — descriptions of SynthAVE videos of all :data:`~.classes.MAX_CLASSES` classes, one
  sentence per run of equal segment kinds: ``"a warm striped disc sounds a tone at a low pitch in
  segments three to five"``, ``"nothing is seen or heard in segment ten"``.
* ``"avqa"`` — descriptions of SynthAVQA scenes, one sentence per instrument:
  ``"the drum on the left plays loudly in segments two to six"``, ``"the bell in the middle stays
  silent"``, and now and then what an instrument looks and sounds like.

Videos and scenes are drawn with :func:`~.ave.plan_video` and :func:`~.avqa.plan_scene` from their
own item seeds (namespace ``"synthtext-..."``), so the corpus never describes a video or scene of
the SynthAVE or SynthAVQA datasets themselves: a pretrained encoder cannot have read the answers to
their test questions. Everything is determined by :class:`TextCorpusConfig`; the ``"test"`` split
(the held-out text) is drawn from other seeds than ``"train"``.

Every word a corpus text can contain is in :func:`corpus_vocabulary`, which depends on the code
only, not on the config.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import lru_cache

import torch

from avpet_core.data.music_avqa import QUESTION_TYPES, substitute_placeholders
from avpet_core.data.synthetic.ave import EVENT, NEITHER, VISIBLE_SILENT, SynthAVEConfig, plan_video
from avpet_core.data.synthetic.avqa import (
    INSTRUMENT_CLASSES,
    INSTRUMENTS,
    POSITIONS,
    TEMPLATES,
    SynthAVQAConfig,
    plan_scene,
)
from avpet_core.data.synthetic.classes import MAX_CLASSES, ClassSpec, class_spec
from avpet_core.data.synthetic.drawing import PALETTES, SHAPES, TEXTURES
from avpet_core.data.synthetic.seeds import NUM_SEGMENTS, check_split, item_seed
from avpet_core.data.synthetic.sound import REGISTERS_HZ, SOUND_SOURCES
from avpet_core.data.tokens import tokenise
from avpet_core.files import config_hash

TEXT_KINDS = ("question", "ave", "avqa")
"""The three kinds of corpus text, in the order the corpus lists them."""

TEXTURE_WORDS = {"solid": "solid", "stripes": "striped", "checker": "checkered", "dots": "dotted"}
SOUND_WORDS = {"tone": "a tone", "sweep": "a rising sweep", "pips": "short pips", "noise_band": "a noise band"}
PITCH_WORDS = ("very low", "low", "fairly low", "middle", "fairly high", "high", "very high")
"""One word (or two) per pitch register of :data:`~.sound.REGISTERS_HZ`, lowest first."""
SEGMENT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
POSITION_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}

# Sentence templates; {look}, {sound}, {when}, ... are filled in by the describers below.
AVE_SENTENCES = {
    "event": (
        "a {look} sounds {sound} {when}",
        "{when} a {look} is seen and heard",
        "a {look} is seen and heard {when}",
    ),
    "visible_silent": ("a {look} is seen but silent {when}", "{when} a {look} is seen but not heard"),
    "audible_offscreen": (
        "{sound} {pitch} is heard off screen {when}",
        "{when} {sound} {pitch} is heard but nothing is seen",
    ),
    "neither": ("nothing is seen or heard {when}", "{when} the video is empty and quiet"),
    "summary": ("the video shows a {look} that sounds {sound} {pitch}",),
}
AVQA_SENTENCES = {
    "plays": ("the {instrument} {where} plays {loudness} {when}", "{when} the {instrument} {where} plays {loudness}"),
    "silent": ("the {instrument} {where} stays silent", "the {instrument} {where} never plays"),
    "offscreen": (
        "a {instrument} off screen plays {loudness} {when}",
        "{when} a {instrument} is heard {loudness} off screen",
    ),
    "looks": ("the {instrument} looks like a {look} and sounds like {sound} {pitch}",),
}
LOUDNESS_WORDS = ("quietly", "loudly")
WHEN_WORDS = ("in", "segment", "segments", "to")
PITCH_PHRASE = "at a {pitch} pitch"

TEMPLATE_VALUES: dict[tuple[str, str], list[list[str]]] = {
    ("Audio", "Counting"): [[]],
    ("Audio", "Comparative"): [[a, b] for a, b in itertools.permutations(INSTRUMENTS, 2)],
    ("Visual", "Counting"): [[f"{i}s"] for i in INSTRUMENTS],
    ("Visual", "Location"): [[p] for p in POSITIONS],
    ("Audio-Visual", "Existential"): [[i] for i in INSTRUMENTS],
    ("Audio-Visual", "Counting"): [[]],
    ("Audio-Visual", "Location"): [["first"], ["last"]],
    ("Audio-Visual", "Comparative"): [[a, b] for a, b in itertools.permutations(POSITIONS, 2)],
    ("Audio-Visual", "Temporal"): [[w, i] for w in ("before", "after") for i in INSTRUMENTS],
}
"""Every ``templ_values`` list :func:`~.avqa.scene_questions` can give each question type."""


@dataclass(frozen=True)
class TextCorpusConfig:
    """Everything that determines the corpus: how many videos and scenes each split describes."""

    num_videos: int = 1500  # SynthAVE videos described in the train split
    num_scenes: int = 1500  # SynthAVQA scenes described in the train split
    num_eval_videos: int = 150  # ... and in each of val and test
    num_eval_scenes: int = 150
    held_out_questions: float = 0.2  # share of the template questions kept out of training (in val and test)
    looks_probability: float = 0.3  # chance that a scene sentence about an instrument is followed by what it looks like
    seed: int = 0

    def key(self) -> str:
        """A short hash of every field (:func:`~avpet_core.files.config_hash`), naming cache files."""
        return config_hash(self)


# ---------------------------------------------------------------------------------------------
# Phrases.
# ---------------------------------------------------------------------------------------------


def look_phrase(spec: ClassSpec) -> str:
    """``"warm striped disc"``: a class's palette, texture and shape."""
    return f"{spec.palette} {TEXTURE_WORDS[spec.texture]} {spec.shape}"


def sound_phrase(spec: ClassSpec) -> str:
    """``"a rising sweep"``: a class's sound source."""
    return SOUND_WORDS[spec.sound]


def pitch_phrase(spec: ClassSpec) -> str:
    """``"at a low pitch"``: a class's register."""
    return PITCH_PHRASE.format(pitch=PITCH_WORDS[REGISTERS_HZ.index(spec.pitch_hz)])


def segments_phrase(start: int, stop: int) -> str:
    """``"in segment four"`` or ``"in segments three to five"`` for segments ``start .. stop - 1`` (0-based)."""
    if stop - start == 1:
        return f"in segment {SEGMENT_WORDS[start]}"
    return f"in segments {SEGMENT_WORDS[start]} to {SEGMENT_WORDS[stop - 1]}"


def _pick(options: tuple[str, ...], g: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (), generator=g))] if len(options) > 1 else options[0]


# ---------------------------------------------------------------------------------------------
# The three kinds of text.
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def question_texts() -> tuple[str, ...]:
    """Every question SynthAVQA's templates can ask, placeholders filled (in :data:`QUESTION_TYPES` order)."""
    texts = []
    for kind in QUESTION_TYPES:
        template = TEMPLATES[kind]
        texts.extend(substitute_placeholders(template, values) for values in TEMPLATE_VALUES[kind])
    return tuple(texts)


def question_split(config: TextCorpusConfig = TextCorpusConfig()) -> dict[str, tuple[str, ...]]:
    """``{"train": ..., "held_out": ...}``: the template questions, a seeded share held out."""
    texts = question_texts()
    g = torch.Generator().manual_seed(item_seed(config.seed, "synthtext-questions", "train", 0))
    order = torch.randperm(len(texts), generator=g).tolist()
    cut = round(config.held_out_questions * len(texts))
    held = set(order[:cut])
    return {
        "train": tuple(t for i, t in enumerate(texts) if i not in held),
        "held_out": tuple(t for i, t in enumerate(texts) if i in held),
    }


def _runs(kinds: list[int]) -> list[tuple[int, int, int]]:
    """``(kind, start, stop)`` for each run of equal kinds."""
    runs, start = [], 0
    for t in range(1, len(kinds) + 1):
        if t == len(kinds) or kinds[t] != kinds[start]:
            runs.append((kinds[start], start, t))
            start = t
    return runs


def describe_video(class_index: int, kinds: list[int], g: torch.Generator) -> list[str]:
    """Sentences about a SynthAVE video: what it shows, then one per run of equal segment kinds."""
    spec = class_spec(class_index)
    fill = {"look": look_phrase(spec), "sound": sound_phrase(spec), "pitch": pitch_phrase(spec)}
    sentences = [_pick(AVE_SENTENCES["summary"], g).format(**fill)]
    names = {EVENT: "event", NEITHER: "neither", VISIBLE_SILENT: "visible_silent"}
    for kind, start, stop in _runs(kinds):
        template = _pick(AVE_SENTENCES[names.get(kind, "audible_offscreen")], g)
        sentences.append(template.format(**fill, when=segments_phrase(start, stop)))
    return sentences


def describe_scene(scene, g: torch.Generator, looks_probability: float) -> list[str]:
    """Sentences about a SynthAVQA scene: one per instrument, some followed by what it looks like."""
    sentences = []
    for source in scene.sources:
        instrument = INSTRUMENTS[source.instrument]
        fill = {"instrument": instrument, "loudness": LOUDNESS_WORDS[source.loud]}
        if source.sounds:
            fill["when"] = segments_phrase(source.onset, source.offset)
        if source.position is None:
            sentences.append(_pick(AVQA_SENTENCES["offscreen"], g).format(**fill))
        else:
            fill["where"] = POSITION_PHRASES[POSITIONS[source.position]]
            sentences.append(_pick(AVQA_SENTENCES["plays" if source.sounds else "silent"], g).format(**fill))
        if torch.rand((), generator=g) < looks_probability:
            spec = class_spec(INSTRUMENT_CLASSES[source.instrument])
            sentences.append(
                AVQA_SENTENCES["looks"][0].format(
                    instrument=instrument, look=look_phrase(spec), sound=sound_phrase(spec), pitch=pitch_phrase(spec)
                )
            )
    return sentences


_VIDEO_CONFIG = SynthAVEConfig(num_classes=MAX_CLASSES)  # every class a SynthAVE config can have
_SCENE_CONFIG = SynthAVQAConfig()


def text_corpus(config: TextCorpusConfig = TextCorpusConfig(), split: str = "train") -> dict[str, tuple[str, ...]]:
    """The corpus texts of ``split`` by kind (:data:`TEXT_KINDS`); ``"val"`` and ``"test"`` are held out.

    ``"question"``: the train questions (train) or the held-out ones (val and test, the same).
    ``"ave"`` and ``"avqa"``: the sentences about the split's videos and scenes, in order.
    """
    check_split(split)
    questions = question_split(config)["train" if split == "train" else "held_out"]
    train = split == "train"
    videos, scenes = [], []
    for index in range(config.num_videos if train else config.num_eval_videos):
        g = torch.Generator().manual_seed(item_seed(config.seed, "synthtext-ave", split, index))
        plan = plan_video(_VIDEO_CONFIG, g)
        videos.extend(describe_video(plan.class_index, plan.kinds.tolist(), g))
    for index in range(config.num_scenes if train else config.num_eval_scenes):
        g = torch.Generator().manual_seed(item_seed(config.seed, "synthtext-avqa", split, index))
        scenes.extend(describe_scene(plan_scene(_SCENE_CONFIG, g), g, config.looks_probability))
    return {"question": questions, "ave": tuple(videos), "avqa": tuple(scenes)}


@lru_cache(maxsize=None)
def corpus_vocabulary() -> tuple[str, ...]:
    """Every word a corpus text can contain, sorted (from the templates and every value they take)."""
    fixed = [
        *question_texts(),
        *POSITION_PHRASES.values(),
        *LOUDNESS_WORDS,
        *WHEN_WORDS,
        *SEGMENT_WORDS[:NUM_SEGMENTS],
        *PITCH_WORDS,
        PITCH_PHRASE,
        *INSTRUMENTS,
        *PALETTES,
        *SHAPES,
        *(TEXTURE_WORDS[t] for t in TEXTURES),
        *(SOUND_WORDS[s] for s in SOUND_SOURCES),
    ]
    for templates in (*AVE_SENTENCES.values(), *AVQA_SENTENCES.values()):
        fixed.extend(templates)
    words = set()
    for text in fixed:
        words.update(tokenise(_PLACEHOLDER.sub(" ", text)))
    return tuple(sorted(words))


_PLACEHOLDER = re.compile(r"\{[a-z]+\}")


def word_counts(texts) -> dict[str, int]:
    """How often each word occurs in ``texts``."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in tokenise(text):
            counts[word] = counts.get(word, 0) + 1
    return counts

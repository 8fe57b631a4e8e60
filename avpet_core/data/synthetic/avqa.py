"""SynthAVQA, the offline stand-in for MUSIC-AVQA: its config, the scenes and the questions asked
about them, the media source that renders a scene, and the :class:`SynthAVQA` dataset (see
:mod:`avpet_core.data.synthetic` for what the data is).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from avpet_core.audio import FbankConfig, segment_fbank_images
from avpet_core.data.media import DatasetFormatError
from avpet_core.data.music_avqa import (
    MAX_QUESTION_LENGTH,
    QUESTION_TYPES,
    AVQAItems,
    AVQAQuestion,
    AVQAVocab,
    substitute_placeholders,
    type_name,
)
from avpet_core.data.synthetic.cache import (
    config_key,
    data_cache_dir,
    load_split,
    render_items,
    save_split,
    split_cache_path,
)
from avpet_core.data.synthetic.classes import class_spec
from avpet_core.data.synthetic.drawing import background_frames, draw_object, finish_frames
from avpet_core.data.synthetic.nuisance import NuisanceConfig
from avpet_core.data.synthetic.seeds import NUM_SEGMENTS, check_split, item_seed, uniform
from avpet_core.data.synthetic.sound import SAMPLE_RATE, SYNTH_FBANK_MICRO, synthesise_class_sound
from avpet_core.files import atomic_write_bytes, ensure_writable

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

# ---------------------------------------------------------------------------------------------
# Configuration.
# ---------------------------------------------------------------------------------------------


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
    # Drawing and sound nuisances: SynthAVE's, with smaller objects that drift less (three share a frame).
    nuisance: NuisanceConfig = NuisanceConfig(min_scale=0.12, max_scale=0.15, position_drift=0.02)
    # Ask only questions of these types (``"Audio-Visual/Temporal"``, ...); None: every type.
    question_types: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.question_types is not None:
            known = {type_name(i) for i in range(len(QUESTION_TYPES))}
            unknown = sorted(set(self.question_types) - known)
            if unknown or not self.question_types:
                raise ValueError(f"question_types must name some of {sorted(known)}, got {self.question_types}")

    def split_size(self, split: str) -> int:
        check_split(split)
        if split == "test" and self.num_test_scenes is not None:
            return self.num_test_scenes
        return self.num_scenes if split == "train" else self.num_eval_scenes


# ---------------------------------------------------------------------------------------------
# Scenes.
# ---------------------------------------------------------------------------------------------


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


def synth_avqa_scene(config: SynthAVQAConfig, split: str, index: int) -> tuple[Scene, torch.Generator]:
    """Scene ``index`` of ``split``, and the generator (after the scene's draws) that picks its questions.

    The scene's pixels and sound are drawn from a second generator (see :class:`SynthAVQAMedia`),
    so the questions can be listed without rendering any video.
    """
    g = torch.Generator().manual_seed(item_seed(config.seed, "synthavqa", split, index))
    return plan_scene(config, g), g


def synth_avqa_video_id(split: str, index: int) -> str:
    return f"synthavqa-{split}-{index:05d}"


# ---------------------------------------------------------------------------------------------
# Questions.
# ---------------------------------------------------------------------------------------------


def _unique(items: list) -> list:
    return [x for x in items if items.count(x) == 1]


def scene_questions(scene: Scene) -> list[tuple[int, list[str], str]]:
    """Every question the templates can ask about ``scene``: ``(type_index, templ_values, answer)``.

    A question is only asked when its answer is well defined (the instruments it names are unique
    where it matters, onsets and loudness differ, ...).
    """
    questions: list[tuple[int, list[str], str]] = []

    def ask(group: str, kind: str, values: list[str], answer: str) -> None:
        questions.append((QUESTION_TYPES.index((group, kind)), values, answer))

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
    off_screen = [s.instrument for s in scene.sources if s.position is None]
    for instrument in _unique([s.instrument for s in seen]) + off_screen:
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
                where = [POSITIONS[a.position], POSITIONS[b.position]]
                ask("Audio-Visual", "Comparative", where, "yes" if a.loud else "no")
    onsets = [s.onset for s in seen_sounding]
    named = _unique([s.instrument for s in seen_sounding])
    if len(set(onsets)) == len(onsets) and len(named) == len(seen_sounding) >= 2:
        ordered = sorted(seen_sounding, key=lambda s: s.onset)
        names = [INSTRUMENTS[s.instrument] for s in ordered]
        for i, name in enumerate(names):
            if i > 0:
                ask("Audio-Visual", "Temporal", ["before", name], names[i - 1])
            if i + 1 < len(names):
                ask("Audio-Visual", "Temporal", ["after", name], names[i + 1])
    return questions


def deciding_segments(scene: Scene, type_index: int, values: list[str], num_segments: int) -> tuple[int, ...]:
    """The segments whose content decides a question's answer (a scene is static, sounds come and go).

    * a question about what is seen (visual counting and location) or about every sound (audio
      counting, and audio-visual counting) is decided by the segments where the sources it counts
      start sounding, or by any segment when only the picture matters: every segment is returned;
    * "is the X playing?": the segments where X sounds (yes), or every segment (no: the absence
      needs the whole video);
    * loudness comparisons: the segments where both named sources sound;
    * "where is the instrument that starts playing first / last?": that source's onset segment;
    * "which instrument starts playing before / after the X?": the onsets of X and of the answer.
    """
    everything = tuple(range(num_segments))
    group, kind = QUESTION_TYPES[type_index]
    sounding = [s for s in scene.sources if s.sounds]

    def playing(source: Source) -> tuple[int, ...]:
        return tuple(range(source.onset, source.offset))

    def by_name(name: str) -> Source | None:
        return next((s for s in sounding if s.position is not None and INSTRUMENTS[s.instrument] == name), None)

    def by_position(word: str) -> Source | None:
        return next((s for s in sounding if s.position is not None and POSITIONS[s.position] == word), None)

    if group == "Visual" or kind == "Counting":
        return everything
    if (group, kind) == ("Audio-Visual", "Existential"):
        source = by_name(values[0])
        return playing(source) if source is not None else everything
    if kind == "Comparative":
        if group == "Audio":
            named = [next(s for s in sounding if INSTRUMENTS[s.instrument] == v) for v in values]
        else:
            named = [by_position(v) for v in values]
        if any(s is None for s in named):
            return everything
        both = sorted(set(playing(named[0])) & set(playing(named[1])))
        return tuple(both) if both else everything
    if (group, kind) == ("Audio-Visual", "Location"):
        extreme = (min if values[0] == "first" else max)(s.onset for s in sounding)
        return (extreme,)
    if (group, kind) == ("Audio-Visual", "Temporal"):
        named = by_name(values[1])
        ordered = sorted((s for s in sounding if s.position is not None), key=lambda s: s.onset)
        index = ordered.index(named)
        other = ordered[index - 1] if values[0] == "before" else ordered[index + 1]
        return tuple(sorted({named.onset, other.onset}))
    return everything


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


# ---------------------------------------------------------------------------------------------
# Media.
# ---------------------------------------------------------------------------------------------


def render_scene(scene: Scene, config: SynthAVQAConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(T, 3, S, S)`` uint8 and a waveform ``(T * 16000,)`` for a scene."""
    nuisance, steps = config.nuisance, config.num_segments
    frames = background_frames(steps, config.image_size, nuisance.num_clutter, g)
    wave = torch.randn(steps * SAMPLE_RATE, generator=g)
    snr = uniform(g, *config.snr_db).item()
    always = torch.ones(steps, dtype=torch.bool)
    for source in scene.sources:
        spec = class_spec(INSTRUMENT_CLASSES[source.instrument])
        if source.position is not None:
            scale = torch.full((steps, 1, 1), uniform(g, nuisance.min_scale, nuisance.max_scale).item() * 2.0)
            cx = torch.full((steps, 1, 1), (source.position - 1) * 0.62 + uniform(g, -0.04, 0.04).item())
            top = uniform(g, -0.3, 0.3).item()
            cy = top + torch.cumsum(uniform(g, -1, 1, steps) * nuisance.position_drift, 0).view(steps, 1, 1)
            theta = torch.full((steps, 1, 1), uniform(g, -1.0, 1.0).item() * math.radians(nuisance.max_rotation_deg))
            frames = draw_object(frames, spec, always, cx, cy, scale, theta, nuisance, g)
        gate = torch.zeros(steps, dtype=torch.bool)
        gate[source.onset : source.offset] = True
        level = snr if source.loud else snr - 10.0
        wave = wave + 10 ** (level / 20) * synthesise_class_sound(spec, gate, nuisance, g)
    frames = finish_frames(frames, nuisance.pixel_noise, g)
    return frames, wave * nuisance.noise_rms


class SynthAVQAMedia:
    """A media source for :class:`~avpet_core.data.music_avqa.MusicAVQA`: renders a SynthAVQA video by id.

    ``media(video_id) -> (frames (T, 3, S, S) float32 in [0, 1], audio (T, 3, mel, frames))``. The
    most recent videos are kept, since consecutive questions often share one; a split read from
    the disk cache (:meth:`use_disk_cache`) is served from its file.
    """

    def __init__(self, config: SynthAVQAConfig, keep: int = 8):
        self.config, self.keep = config, keep
        self._recent: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._stored: dict[str, torch.Tensor] | None = None
        self._stored_split: str | None = None
        self.cache_path: Path | None = None

    def use_disk_cache(self, split: str, directory: str | Path | None = None, *, num_workers: int = 0) -> None:
        """Serve every video of ``split`` from its file in ``directory`` (default
        :func:`~avpet_core.data.synthetic.cache.data_cache_dir`), rendering the split first if
        there is none (with ``num_workers`` processes)."""
        check_split(split)
        directory = data_cache_dir() if directory is None else Path(directory)
        path = split_cache_path(directory, "synthavqa", config_key(self.config), split)
        if path.is_file():
            stored = load_split(path, ("frames", "audio"), finite=("audio",))
        else:
            ensure_writable(path.parent)  # before the rendering, not after
            videos = render_items(
                partial(_render_video, self.config, split), self.config.split_size(split), num_workers
            )
            stored = {"frames": torch.stack([f for f, _ in videos]), "audio": torch.stack([a for _, a in videos])}
            save_split(path, stored)
        self._stored, self._stored_split, self.cache_path = stored, split, path
        self._recent.clear()

    def _from_disk(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        parts = video_id.split("-")
        if self._stored is None or len(parts) != 3 or parts[1] != self._stored_split or not parts[2].isdigit():
            return None
        index = int(parts[2])
        if index >= len(self._stored["frames"]):
            return None
        return self._stored["frames"][index], self._stored["audio"][index]

    def __call__(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        stored = self._from_disk(video_id)
        if stored is not None:
            frames, audio = stored
        elif video_id in self._recent:
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
            check_split(split)
            index = int(index)
        except ValueError as err:
            raise DatasetFormatError(f"{video_id!r} is not a SynthAVQA video id (synthavqa-SPLIT-INDEX)") from err
        scene, _ = synth_avqa_scene(self.config, split, index)
        render_generator = torch.Generator().manual_seed(item_seed(self.config.seed, "synthavqa-media", split, index))
        frames, wave = render_scene(scene, self.config, render_generator)
        audio = segment_fbank_images(wave, self.config.fbank, num_segments=self.config.num_segments, source=video_id)
        return frames, audio[:, :1].to(torch.float16)


def _render_video(config: SynthAVQAConfig, split: str, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Video ``index`` of ``split`` as :meth:`SynthAVQAMedia._render` makes it (for the disk cache)."""
    return SynthAVQAMedia(config, keep=0)._render(synth_avqa_video_id(split, index))


# ---------------------------------------------------------------------------------------------
# The dataset.
# ---------------------------------------------------------------------------------------------


class SynthAVQA(AVQAItems):
    """SynthAVQA questions as a ``Dataset`` of AVQA-style items (those of
    :class:`~avpet_core.data.music_avqa.MusicAVQA`).

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
        check_split(split)
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

    def use_disk_cache(self, directory: str | Path | None = None, *, num_workers: int = 0) -> "SynthAVQA":
        """Serve this split's videos from the disk cache (rendered once, with ``num_workers``
        processes; see :mod:`avpet_core.data.synthetic.cache`); returns the dataset."""
        self.media.use_disk_cache(self.split, directory, num_workers=num_workers)
        return self

    def _make_questions(self, split: str) -> tuple[list[Scene], list[AVQAQuestion], list[list[str]]]:
        scenes, questions, templ_values = [], [], []
        for index in range(self.config.split_size(split)):
            scene, g = synth_avqa_scene(self.config, split, index)
            scenes.append(scene)
            candidates = scene_questions(scene)
            if self.config.question_types is not None:
                candidates = [c for c in candidates if type_name(c[0]) in self.config.question_types]
            chosen = _choose_questions(candidates, self.config.questions_per_scene, g)
            for type_index, values, answer in chosen:
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

    def deciding_segments(self, index: int) -> tuple[int, ...]:
        """The segments that decide question ``index``'s answer (:func:`deciding_segments`)."""
        question = self.questions[index]
        scene = self.scenes[int(question.video_id.rsplit("-", 1)[1])]
        return deciding_segments(scene, question.type_index, self.templ_values[index], self.config.num_segments)

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
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.music_avqa_records(), indent=1).encode())
        return path

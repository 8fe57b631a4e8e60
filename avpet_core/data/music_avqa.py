"""MUSIC-AVQA: question files, vocabularies and a ``Dataset`` (Li et al., CVPR 2022).

The dataset's question files are JSON lists of objects with these fields (spelling as in the
dataset)::

    {"video_id": "00000272", "question_id": 52,
     "type": "[\\"Audio-Visual\\", \\"Temporal\\"]",          # a JSON string: [group, kind]
     "question_content": "Where is the <FL> sounding instrument?",
     "templ_values": "[\\"first\\"]",                         # a JSON list, one value per placeholder
     "anser": "left",                                         # sic: the dataset's own misspelling
     "question_deleted": 0}

The placeholders ``<Object>``, ``<LR>``, ``<FL>``, ``<TH>``, ``<LRer>``, ``<LL>``, ``<BA>`` in
``question_content`` are filled, in order of appearance, from ``templ_values``
(:func:`substitute_placeholders`). ``type`` and ``templ_values`` may also be given as real JSON
lists rather than strings; both are read.

Questions come in nine types (:data:`QUESTION_TYPES`), three groups: Audio {Counting,
Comparative}, Visual {Counting, Location}, Audio-Visual {Existential, Counting, Location,
Comparative, Temporal}. An item's ``type`` is the index of its pair in :data:`QUESTION_TYPES`, and
:func:`accuracy_by_type` turns per-question correctness into the paper's Table 2 columns.

Vocabularies (:class:`AVQAVocab`) are built from the *train* split, as in the MUSIC-AVQA code:
question words (lower-cased, punctuation dropped: :func:`avpet_core.data.tokens.tokenise`) with
id 0 = ``<pad>`` and 1 = ``<unk>``, and the set of train answers. The val/test sets reuse the
train vocabulary; an answer outside it is an error naming the file and question.

:class:`MusicAVQA` reads the real dataset's files and SynthAVQA's export alike: the questions come
from the JSON, the frames and audio from a *media source* — any callable ``video_id -> (frames,
audio)`` (:mod:`avpet_core.data.video_folder`); :class:`~avpet_core.data.video_folder.VideoFolderMedia`
decodes the real videos, and :class:`avpet_core.data.synthetic.SynthAVQAMedia` renders the
synthetic scenes.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import Dataset

from avpet_core.data.media import DatasetFormatError

# PAD_ID and tokenise are also imported from here, by heads/avqa.py and tests/test_text_encoders.py
from avpet_core.data.tokens import PAD_ID, PAD_TOKEN, UNK_ID, UNK_TOKEN, tokenise
from avpet_core.data.video_folder import MediaSource

QUESTION_TYPES: tuple[tuple[str, str], ...] = (
    ("Audio", "Counting"),
    ("Audio", "Comparative"),
    ("Visual", "Counting"),
    ("Visual", "Location"),
    ("Audio-Visual", "Existential"),
    ("Audio-Visual", "Counting"),
    ("Audio-Visual", "Location"),
    ("Audio-Visual", "Comparative"),
    ("Audio-Visual", "Temporal"),
)
"""The nine question types, ``(group, kind)``; an item's ``type`` is an index into this tuple."""

GROUPS = ("Audio", "Visual", "Audio-Visual")
PLACEHOLDERS = ("<Object>", "<LR>", "<FL>", "<TH>", "<LRer>", "<LL>", "<BA>")
PLACEHOLDER_PATTERN = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
REQUIRED_FIELDS = ("video_id", "question_id", "type", "question_content", "templ_values", "anser")
MAX_QUESTION_LENGTH = 16
"""Question token budget; MUSIC-AVQA's longest substituted questions have about 14 words."""


def type_name(index: int) -> str:
    """``"Audio-Visual/Temporal"`` for the index of that pair in :data:`QUESTION_TYPES`."""
    group, kind = QUESTION_TYPES[index]
    return f"{group}/{kind}"


@dataclass(frozen=True)
class AVQAQuestion:
    """One question, placeholders filled in."""

    video_id: str
    question_id: int
    type_index: int
    question: str
    answer: str
    template: str
    where: str  # "file: question N (question_id Q)" for error messages


def substitute_placeholders(content: str, values: list[str], *, where: str = "question") -> str:
    """Fill ``<Object>``, ``<LR>``, ... in ``content`` with ``values`` in order of appearance."""
    found = PLACEHOLDER_PATTERN.findall(content)
    if len(found) != len(values):
        raise DatasetFormatError(
            f"{where}: {len(found)} placeholder(s) {found} in {content!r} but {len(values)} templ_values {values}"
        )
    filled = iter(str(v) for v in values)
    return PLACEHOLDER_PATTERN.sub(lambda _: next(filled), content)


def _json_list(value, field: str, where: str) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DatasetFormatError(f"{where}: field {field!r} is not valid JSON ({err.msg}): {value!r}") from err
    if not isinstance(value, list):
        raise DatasetFormatError(f"{where}: field {field!r} should be a JSON list, got {value!r}")
    return value


def parse_type(value, *, where: str = "question") -> int:
    """Index into :data:`QUESTION_TYPES` of a ``type`` field such as ``'["Audio", "Counting"]'``."""
    pair = _json_list(value, "type", where)
    if len(pair) != 2 or tuple(pair) not in QUESTION_TYPES:
        known = ", ".join(type_name(i) for i in range(len(QUESTION_TYPES)))
        raise DatasetFormatError(f"{where}: unknown question type {pair!r}; known types: {known}")
    return QUESTION_TYPES.index(tuple(pair))


def read_questions(path: str | Path, *, drop_deleted: bool = True) -> list[AVQAQuestion]:
    """Parse a MUSIC-AVQA question file; every problem is one :class:`DatasetFormatError`.

    Questions with ``question_deleted`` set are left out unless ``drop_deleted=False``.
    """
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DatasetFormatError(f"{path}: question file not found") from err
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path}: cannot read ({err})") from err
    if not isinstance(records, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of questions, got {type(records).__name__}")
    questions = []
    for number, record in enumerate(records):
        where = f"{path}: question {number}"
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if "question_id" in record:
            where += f" (question_id {record['question_id']})"
        missing = [field for field in REQUIRED_FIELDS if field not in record]
        if missing:
            raise DatasetFormatError(f"{where}: missing field(s) {', '.join(repr(m) for m in missing)}")
        if drop_deleted and int(record.get("question_deleted", 0) or 0):
            continue
        try:
            question_id = int(record["question_id"])
        except (TypeError, ValueError) as err:
            raise DatasetFormatError(f"{where}: question_id {record['question_id']!r} is not an integer") from err
        template = record["question_content"]
        if not isinstance(template, str):
            raise DatasetFormatError(f"{where}: question_content should be a string, got {template!r}")
        values = _json_list(record["templ_values"], "templ_values", where)
        questions.append(
            AVQAQuestion(
                video_id=str(record["video_id"]),
                question_id=question_id,
                type_index=parse_type(record["type"], where=where),
                question=substitute_placeholders(template, values, where=where),
                answer=str(record["anser"]).strip(),
                template=template,
                where=where,
            )
        )
    return questions


@dataclass(frozen=True)
class AVQAVocab:
    """Question-word and answer vocabularies (from the train split).

    ``question_tokens[0] == "<pad>"`` (id :data:`PAD_ID` = 0) and ``question_tokens[1] == "<unk>"``
    (id :data:`UNK_ID` = 1); the rest are the train words, sorted. ``answers`` are the train
    answers, sorted; an answer's index is the class a model predicts.
    """

    question_tokens: tuple[str, ...]
    answers: tuple[str, ...]

    @classmethod
    def from_questions(cls, questions: Iterable[AVQAQuestion], *, answers: Iterable[str] | None = None) -> "AVQAVocab":
        """Words of ``questions`` (the train split); answers from them too, unless a fixed list is given."""
        questions = list(questions)
        words = sorted({word for q in questions for word in tokenise(q.question)})
        answers = sorted({q.answer for q in questions}) if answers is None else list(answers)
        return cls(question_tokens=(PAD_TOKEN, UNK_TOKEN, *words), answers=tuple(answers))

    def __post_init__(self):
        object.__setattr__(self, "_token_ids", {w: i for i, w in enumerate(self.question_tokens)})
        object.__setattr__(self, "_answer_ids", {a: i for i, a in enumerate(self.answers)})

    def encode_question(self, question: str, max_length: int = MAX_QUESTION_LENGTH) -> tuple[torch.Tensor, int]:
        """Token ids ``(max_length,)`` padded with :data:`PAD_ID` (longer questions are cut), and the length."""
        ids = [self._token_ids.get(word, UNK_ID) for word in tokenise(question)][:max_length]
        padded = torch.full((max_length,), PAD_ID, dtype=torch.int64)
        padded[: len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return padded, len(ids)

    def answer_index(self, answer: str, *, where: str = "question") -> int:
        try:
            return self._answer_ids[answer]
        except KeyError as err:
            raise DatasetFormatError(
                f"{where}: answer {answer!r} is not in the answer vocabulary built from the train split "
                f"({len(self.answers)} answers)"
            ) from err


class AVQAItems(Dataset):
    """Items of an AVQA-style dataset, shared by :class:`MusicAVQA` and SynthAVQA.

    A subclass sets ``questions`` (:class:`AVQAQuestion` list), ``vocab``, ``answer_ids``,
    ``media`` and ``max_question_length``; this class turns question ``index`` into an item.
    """

    types = QUESTION_TYPES
    questions: list
    vocab: "AVQAVocab"
    answer_ids: list[int]
    media: "MediaSource"
    max_question_length: int

    @property
    def answer_vocab(self) -> tuple[str, ...]:
        return self.vocab.answers

    @property
    def question_vocab(self) -> tuple[str, ...]:
        return self.vocab.question_tokens

    @property
    def num_answers(self) -> int:
        return len(self.vocab.answers)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict:
        question = self.questions[index]
        frames, audio = self.media(question.video_id)
        ids, length = self.vocab.encode_question(question.question, self.max_question_length)
        return {
            "frames": frames,
            "audio": audio,
            "question": ids,
            "question_length": torch.tensor(length, dtype=torch.int64),
            "answer": torch.tensor(self.answer_ids[index], dtype=torch.int64),
            "type": torch.tensor(question.type_index, dtype=torch.int64),
            "question_id": torch.tensor(question.question_id, dtype=torch.int64),
            "video_id": question.video_id,
        }


class MusicAVQA(AVQAItems):
    """Questions from a MUSIC-AVQA-format JSON file with their video's frames and audio.

    Args:
        questions_json: the split's question file (``avqa-train.json``, ... or SynthAVQA's export).
        media: ``video_id -> (frames, audio)``, e.g. :class:`VideoFolderMedia` or
            :class:`avpet_core.data.synthetic.SynthAVQAMedia`.
        vocab: the train split's :class:`AVQAVocab`; ``None`` builds it from this file (pass
            ``None`` for the train split and ``train.vocab`` for val/test).
        max_question_length: question ids are padded (with 0) or cut to this many tokens.
        drop_deleted: leave out questions with ``question_deleted`` set.

    Items: ``frames`` float32 ``(T, 3, H, W)`` in ``[0, 1]``; ``audio`` float32 ``(T, 3, mel,
    frames)``; ``question`` int64 ``(max_question_length,)``; ``question_length`` int64 scalar;
    ``answer`` int64 scalar (index into ``vocab.answers``); ``type`` int64 scalar (index into
    :data:`QUESTION_TYPES`); ``question_id`` int64 scalar; ``video_id`` str. PyTorch's default
    collate function batches them.
    """

    def __init__(
        self,
        questions_json: str | Path,
        media: MediaSource,
        *,
        vocab: AVQAVocab | None = None,
        max_question_length: int = MAX_QUESTION_LENGTH,
        drop_deleted: bool = True,
    ):
        self.path = Path(questions_json)
        self.questions = read_questions(self.path, drop_deleted=drop_deleted)
        self.vocab = vocab if vocab is not None else AVQAVocab.from_questions(self.questions)
        self.media = media
        self.max_question_length = max_question_length
        # Check every answer now, so a bad file fails at construction with its question named.
        self.answer_ids = [self.vocab.answer_index(q.answer, where=q.where) for q in self.questions]
        self.type_counts = Counter(type_name(q.type_index) for q in self.questions)


def accuracy_by_type(correct: torch.Tensor, types: torch.Tensor) -> dict[str, float]:
    """Accuracy per question type, per group and overall (the columns of MUSIC-AVQA's Table 2).

    ``correct`` is a boolean ``(N,)`` tensor, ``types`` the items' ``type`` indices. Keys are
    ``"Audio/Counting"``, ..., ``"Audio"``, ``"Visual"``, ``"Audio-Visual"`` and ``"overall"``;
    types with no questions are left out.
    """
    correct, types = correct.bool().flatten(), types.long().flatten()
    if correct.shape != types.shape:
        raise ValueError(f"correct {tuple(correct.shape)} and types {tuple(types.shape)} differ in length")
    result: dict[str, float] = {}
    for index in range(len(QUESTION_TYPES)):
        chosen = types == index
        if chosen.any():
            result[type_name(index)] = correct[chosen].float().mean().item()
    for group in GROUPS:
        chosen = torch.tensor([QUESTION_TYPES[int(t)][0] == group for t in types], dtype=torch.bool)
        if chosen.any():
            result[group] = correct[chosen].float().mean().item()
    if len(correct):
        result["overall"] = correct.float().mean().item()
    return result

"""Audio-visual question answering (MUSIC-AVQA; AV-PEA Table 2): one answer per question about a video.

* data: SynthAVQA offline (:mod:`avpet_core.data.synthetic`), or MUSIC-AVQA from ``--data-root``
  (:mod:`avpet_core.data.music_avqa`), at the backbone's sizes; val and test use the train
  split's vocabularies (as MUSIC-AVQA's code does);
* head: ``avst`` (MUSIC-AVQA's AVST), reading ``batch["question"]``, ``batch["question_length"]``
  and ``batch["answer"]``; its loss is ``CE(answer) + 0.5 CE(match)``;
* metrics: the accuracy over all questions (``"accuracy"``, which picks the best epoch), then the
  columns of MUSIC-AVQA's and AV-PEA's Table 2 under keys fit for a CSV header
  (:data:`AVQA_METRIC_KEYS`): one accuracy per question type (e.g. ``"audio_visual_temporal"``),
  one per group (``"audio"``, ``"visual"``, ``"audio_visual"``) and ``"group_mean"``, the
  unweighted mean of the three group accuracies — what AV-PEA's Table 2 prints as "Avg" (for every
  row of that table, Avg equals the mean of its Audio, Visual and Audio-Visual columns, not the
  accuracy over all questions). A type or group without questions gets ``None`` (the keys stay the
  same from epoch to epoch, so the CSV log keeps one header);
* baseline: the most frequent train answer (:func:`majority_answer_metrics`);
* printed table: ours and the paper's per row, then a per-question-type block.
"""

from __future__ import annotations

from pathlib import Path

import torch

from avpet_core.data.music_avqa import GROUPS, QUESTION_TYPES, MusicAVQA, accuracy_by_type, type_name
from avpet_core.data.video_folder import VideoFolderMedia
from avpet_core.data.synthetic import SynthAVQA, SynthAVQAConfig
from avpet_core.tasks.base import DataRequest, TableRow, Task, TaskError, require


def avqa_metric_key(column: str) -> str:
    """A Table 2 column as a log-friendly key: ``"Audio-Visual/Counting" -> "audio_visual_counting"``."""
    return column.lower().replace("-", "_").replace("/", "_")


AVQA_COLUMNS: tuple[str, ...] = (*(type_name(i) for i in range(len(QUESTION_TYPES))), *GROUPS)
"""The nine question types (``"Audio/Counting"``, ...) and the three groups, in Table 2's order."""

AVQA_METRIC_KEYS: dict[str, str] = {
    "overall": "accuracy",
    **{column: avqa_metric_key(column) for column in AVQA_COLUMNS},
    "group mean": "group_mean",
}
"""Column name -> metric key of :meth:`AVQATask.metrics` (``"overall"`` is ``"accuracy"``)."""

AVQA_TABLE_COLUMNS = (
    ("Audio", "audio"),
    ("Visual", "visual"),
    ("A-V", "audio_visual"),
    ("Avg", "group_mean"),
    ("overall", "accuracy"),
)
"""The printed Table 2 columns: the three groups, the paper's "Avg" (their mean) and the accuracy over all questions."""


def avqa_metrics(correct: torch.Tensor, types: torch.Tensor) -> dict[str, float | None]:
    """Overall accuracy, then Table 2's columns (module docstring) from per-question correctness."""
    table = accuracy_by_type(correct, types)
    result: dict[str, float | None] = {"accuracy": table.get("overall")}
    for column in AVQA_COLUMNS:
        result[avqa_metric_key(column)] = table.get(column)
    groups = [table[g] for g in GROUPS if g in table]
    result["group_mean"] = sum(groups) / len(groups) if len(groups) == len(GROUPS) else None
    return result


def majority_answer_metrics(train_set, eval_set, *, per_type: bool = False) -> dict[str, float | None]:
    """:class:`AVQATask`'s metrics of answering every question of ``eval_set`` with the most frequent train answer.

    ``per_type=True`` takes the most frequent train answer of the question's type instead (a prior
    that reads the question's type, not the video). Only the answers are read, no media. Ties go
    to the answer with the lower index.
    """
    train_answers = torch.tensor(train_set.answer_ids, dtype=torch.int64)
    train_types = torch.tensor([q.type_index for q in train_set.questions], dtype=torch.int64)
    answers = torch.tensor(eval_set.answer_ids, dtype=torch.int64)
    types = torch.tensor([q.type_index for q in eval_set.questions], dtype=torch.int64)
    overall = int(torch.bincount(train_answers).argmax())
    predictions = torch.full_like(answers, overall)
    if per_type:
        for kind in types.unique().tolist():
            chosen = train_answers[train_types == kind]
            if len(chosen):
                predictions[types == kind] = int(torch.bincount(chosen).argmax())
    return avqa_metrics(predictions == answers, types)


def percent(value: float | None, digits: int) -> str:
    """``value`` in % with ``digits`` decimals, ``"-"`` for ``None``."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def per_type_lines(names: list[str], tests: list[dict], title: str = "per question type (ours, %)") -> list[str]:
    """One line per question type, one column per row (``names``) of test metrics (``tests``)."""
    lines = [f"{title:34}" + "".join(f" {n:>7}" for n in names)]
    for index in range(len(QUESTION_TYPES)):
        key = avqa_metric_key(type_name(index))
        lines.append(f"{type_name(index):34}" + "".join(f" {percent(t.get(key), 1):>7}" for t in tests))
    return lines


class AVQATask(Task):
    """Audio-visual question answering: one answer per question; metrics: Table 2's columns."""

    name = "avqa"
    synthetic = "SynthAVQA"
    data_kinds = ("synth", "music-avqa")

    def metrics(self, predictions: torch.Tensor, batches: list[dict]) -> dict[str, float | None]:
        answers = torch.cat([b["answer"].flatten() for b in batches])
        types = torch.cat([b["type"].flatten() for b in batches])
        return avqa_metrics(predictions.flatten() == answers, types)

    def datasets(self, request: DataRequest):
        """SynthAVQA or MUSIC-AVQA (from ``request.root``) at the profile's sizes.

        The synthetic splits keep every rendered video in memory, so only the first epoch renders.
        A MUSIC-AVQA directory holds ``avqa-train.json``, ``avqa-val.json``, ``avqa-test.json`` and
        ``videos/{video_id}.mp4``; its videos are decoded on every read, at the profile's
        ``real_media`` sizes.
        """
        require(request, SynthAVQAConfig, "AVQA")
        if request.kind == "synth":
            config = request.profile.synthetic(request.config)
            train = SynthAVQA(config, "train", keep_videos=None)
            return (
                train,
                *(SynthAVQA(config, split, vocab=train.vocab, keep_videos=None) for split in ("val", "test")),
            )
        if request.kind == "music-avqa":
            if request.root is None:
                raise TaskError(
                    "data 'music-avqa' needs --data-root, the MUSIC-AVQA directory with avqa-train.json, "
                    "avqa-val.json, avqa-test.json and videos/"
                )
            root = Path(request.root)
            if not root.is_dir():
                raise TaskError(f"{root}: MUSIC-AVQA directory not found")
            sizes = request.profile.real_media
            media = VideoFolderMedia(root / "videos", image_size=sizes.image_size, fbank=sizes.fbank)
            train = MusicAVQA(root / "avqa-train.json", media)
            return (
                train,
                *(MusicAVQA(root / f"avqa-{split}.json", media, vocab=train.vocab) for split in ("val", "test")),
            )
        raise TaskError(f"unknown data {request.kind!r} for an AVQA experiment; choose 'synth' or 'music-avqa'")

    def head_sizes(self, train_set) -> dict[str, int]:
        return {"num_classes": train_set.num_answers, "vocab_size": len(train_set.question_vocab)}

    def baselines(self, train_set, test_set) -> dict:
        return {"majority_answer": majority_answer_metrics(train_set, test_set)}

    def row_extras(self, row: TableRow) -> dict:
        return {
            "task": self.name,
            "test": dict(row.metrics),
            "paper_columns": dict(row.paper_columns),
            "paper_adapter_parameters_m": row.paper_parameters_m[0] if row.paper_parameters_m else None,
            "paper_trainable_parameters_m": row.paper_parameters_m[1] if row.paper_parameters_m else None,
            "baselines": dict(row.baselines),
        }

    def table_lines(self, rows: list[TableRow]) -> list[str]:
        """Two lines per row — ours, then the paper's — and a per-type block (the paper gives no per-type numbers)."""
        header = "".join(f" {name:>7}" for name, _ in AVQA_TABLE_COLUMNS)
        lines = [f"{'test accuracy (%)':34} {'':5} {'adapter':>8} {'trained':>8}{header}"]
        for r in rows:
            ours = "".join(f" {percent(r.metrics.get(key), 1):>7}" for _, key in AVQA_TABLE_COLUMNS)
            lines.append(f"{r.label:34} {'ours':5} {r.adapter / 1e6:7.3f}M {r.trainable / 1e6:7.3f}M{ours}")
            paper_columns = dict(r.paper_columns)
            paper = "".join(
                f" {percent(None if key not in paper_columns else paper_columns[key] / 100, 2):>7}"
                for _, key in AVQA_TABLE_COLUMNS
            )
            counts = [f"{m:.1f}M" for m in r.paper_parameters_m] if r.paper_parameters_m else ["-", "-"]
            lines.append(f"{'':34} {'paper':5} {counts[0]:>8} {counts[1]:>8}{paper}")
        majority = rows[0].baselines.get("majority_answer")
        if majority is not None:
            cells = "".join(f" {percent(majority.get(key), 1):>7}" for _, key in AVQA_TABLE_COLUMNS)
            lines.append(f"{'majority answer of the train split':34} {'ours':5} {'-':>8} {'-':>8}{cells}")
        lines.append(
            "Avg: mean of the Audio, Visual and A-V accuracies (the paper's Avg); overall: over all questions."
        )
        lines.append("")
        return lines + per_type_lines([r.name.split("/")[-1] for r in rows], [dict(r.metrics) for r in rows])

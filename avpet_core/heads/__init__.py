"""Task heads: every head has one interface, and is registered by name.

::

    out = head(features, batch)          # features: what the model returned; batch: the loop's dict
    loss = head.loss(out, batch)         # a scalar to minimise
    predictions = head.predict(out)      # what the task's metrics compare with the batch

==========  ======  ===========================================  ===================================
name        task    class                                        reads
==========  ======  ===========================================  ===================================
cmbs        avel    :class:`~avpet_core.heads.avel.CMBSHead`     both streams' tokens (Tables 1, 4)
segment     avel    :class:`~avpet_core.heads.avel.SegmentClassifier`  the two CLS tokens (LAVISH)
avst        avqa    :class:`~avpet_core.heads.avqa.AVSTHead`     tokens and the question (Table 2)
video       video   :class:`~avpet_core.heads.video.VideoClassHead`    the summary tokens
trimodal    tavqa   :class:`~.trimodal_avqa.TrimodalAVQAHead`    three encoders' tokens (chapter 9)
==========  ======  ===========================================  ===================================

Adding a head is a file with its module and a builder ``build(dim, sizes, hidden) -> head``, and
one line in :data:`HEADS` naming its task and the sizes it needs from the data; :func:`build_head`
checks them before the builder runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from avpet_core.heads.avel import (
    AVELOutput,
    CMBSHead,
    CMBSHeadConfig,
    SegmentClassifier,
    build_cmbs_head,
    build_segment_classifier,
)
from avpet_core.heads.avqa import AVQAHeadConfig, AVQAOutput, AVSTHead, QuestionGuidedAttention, build_avst_head
from avpet_core.heads.trimodal_avqa import TrimodalAVQAHead, build_trimodal_avqa_head
from avpet_core.heads.video import VideoClassHead, build_video_class_head


class HeadError(ValueError):
    """A head name that does not exist, or does not fit the task."""


@dataclass(frozen=True)
class HeadEntry:
    """A registered head: the task whose batches and metrics it fits, and how to build it.

    ``build(dim, sizes, hidden)``: ``dim`` the width of the features (a trimodal head: the three
    widths by modality), ``sizes`` what the task's data fixes (``num_classes``, ``vocab_size``),
    ``hidden`` the head's width (``None``: its own default). ``sizes`` names the keys ``build``
    reads; each must be a positive integer.
    """

    task: str
    build: Callable[..., nn.Module]
    sizes: tuple[str, ...] = ("num_classes",)


HEADS: dict[str, HeadEntry] = {
    "cmbs": HeadEntry("avel", build_cmbs_head),
    "segment": HeadEntry("avel", build_segment_classifier),
    "avst": HeadEntry("avqa", build_avst_head, sizes=("num_classes", "vocab_size")),
    "video": HeadEntry("video-classification", build_video_class_head),
    "trimodal": HeadEntry("trimodal-avqa", build_trimodal_avqa_head),
}
"""Every head by name (see the table above)."""


def heads_for(task: str) -> tuple[str, ...]:
    """The names of the heads registered for ``task``."""
    return tuple(name for name, entry in HEADS.items() if entry.task == task)


def build_head(name: str, task: str, dim: int, sizes: dict, hidden: int | None = None) -> nn.Module:
    """The head ``name`` for ``task``, built for features of width ``dim``."""
    if name not in HEADS:
        raise HeadError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    entry = HEADS[name]
    if entry.task != task:
        raise HeadError(f"head {name!r} does not fit task {task!r}; choose one of {list(heads_for(task))}")
    missing = [key for key in entry.sizes if key not in sizes]
    if missing:
        raise HeadError(f"head {name!r} needs the sizes {list(entry.sizes)} from the data; missing {missing}")
    bad = {key: sizes[key] for key in entry.sizes if not isinstance(sizes[key], int) or sizes[key] < 1}
    if bad:
        raise HeadError(f"head {name!r}: sizes must be positive integers, got {bad}")
    return entry.build(dim, sizes, hidden)


__all__ = [
    "HEADS",
    "AVELOutput",
    "AVQAHeadConfig",
    "AVQAOutput",
    "AVSTHead",
    "CMBSHead",
    "CMBSHeadConfig",
    "HeadEntry",
    "HeadError",
    "QuestionGuidedAttention",
    "SegmentClassifier",
    "TrimodalAVQAHead",
    "VideoClassHead",
    "build_head",
    "heads_for",
]

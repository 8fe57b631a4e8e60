"""Word tokens of questions and captions: the tokeniser and the special ids of word vocabularies.

:func:`tokenise` lower-cases a text and keeps its words, punctuation dropped (as the MUSIC-AVQA code
does for its questions). A word vocabulary built on it starts with ``<pad>`` (id :data:`PAD_ID` =
0) and ``<unk>`` (id :data:`UNK_ID` = 1): :class:`~avpet_core.data.music_avqa.AVQAVocab` for
MUSIC-AVQA's questions. The micro text encoder's word tokenizer
(:mod:`avpet_core.backbones.micro_text`) splits text the same way, with its own special tokens.
"""

from __future__ import annotations

import re

PAD_ID, UNK_ID = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"


def tokenise(question: str) -> list[str]:
    """Lower-cased words of a question, punctuation dropped:
    ``"Is the cello louder?"`` -> ``[is, the, cello, louder]``."""
    return re.findall(r"[a-z0-9]+", question.lower())

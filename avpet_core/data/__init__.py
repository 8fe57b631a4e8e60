"""Datasets: SynthAVE and SynthAVQA (offline, from a seed), AVE and MUSIC-AVQA (real files).

Every dataset is a ``torch.utils.data.Dataset`` of dicts of tensors, with the same keys for the
synthetic and the real version of a task, so training code never asks which one it has:

* AVE-style (:class:`SynthAVE`, :class:`AVE`): ``frames`` float32 ``(T, 3, H, W)`` in ``[0, 1]``
  (not normalised: the model applies its backbone's mean and std), ``audio`` float32 ``(T, 3, mel,
  frames)`` normalised fbank images, ``labels`` int64 ``(T,)`` with background = the last index,
  ``video_id`` str; T = 10 one-second segments.
* AVQA-style (:class:`SynthAVQA`, :class:`MusicAVQA`): ``frames``, ``audio`` as above,
  ``question`` int64 ``(max_question_length,)`` padded with :data:`PAD_ID` = 0,
  ``question_length``, ``answer`` (index into the answer vocabulary), ``type`` (index into
  :data:`QUESTION_TYPES`), ``question_id``, ``video_id``.

PyTorch's default collate function batches both. Errors in files or media are
:class:`DatasetFormatError` / :class:`MediaDecodeError`, both ``ValueError`` subclasses whose
message names the file (and line).

Shared by the readers: the word tokeniser and the vocabularies' special ids (:mod:`.tokens`:
:func:`tokenise`, :data:`PAD_ID`, :data:`UNK_ID`), media sources that decode a folder of videos by
id (:mod:`.video_folder`: :class:`VideoFolderMedia`), a SynthAVE split stacked into tensors with
one label per video (:mod:`.video_tensors`: :class:`VideoTensors`, :func:`load_videos`) and AVQA
items with their question's text (:mod:`.question_text`: :class:`QuestionText`).
"""

from avpet_core.audio import segment_fbank_images
from avpet_core.data.ave import (
    AVE,
    AVE_FBANK_MICRO,
    AVE_FBANK_VITB,
    AVE_MICRO,
    AVEIndex,
    AVEMediaConfig,
    PreprocessReport,
    preprocess_ave,
    read_annotation_file,
    segment_labels,
)
from avpet_core.data.media import (
    DataError,
    DatasetFormatError,
    MediaDecodeError,
    decode_audio,
    decode_frames,
    load_audio_16k_mono,
    probe_video,
)
from avpet_core.data.music_avqa import (
    QUESTION_TYPES,
    AVQAVocab,
    MusicAVQA,
    accuracy_by_type,
    read_questions,
    type_name,
)
from avpet_core.data.question_text import QuestionText
from avpet_core.data.synthetic import (
    SEGMENT_KINDS,
    SYNTH_AVE_VITB,
    SYNTH_FBANK_MICRO,
    SYNTH_FBANK_VITB,
    SynthAVE,
    SynthAVEConfig,
    SynthAVQA,
    SynthAVQAConfig,
    SynthAVQAMedia,
    oracle_accuracies,
)
from avpet_core.data.tokens import PAD_ID, UNK_ID, tokenise
from avpet_core.data.video_folder import MediaSource, VideoFolderMedia
from avpet_core.data.video_tensors import VideoTensors, load_videos

__all__ = [
    name
    for name in dir()
    if not name.startswith("_")
    and name
    not in {"ave", "media", "music_avqa", "question_text", "synthetic", "tokens", "video_folder", "video_tensors"}
]

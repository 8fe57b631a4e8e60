"""MUSIC-AVQA: the json format (``anser`` and all), placeholders, vocabularies, per-type accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from avpet_core.data import DatasetFormatError, MusicAVQA, VideoFolderMedia
from avpet_core.data.music_avqa import (
    QUESTION_TYPES,
    AVQAVocab,
    accuracy_by_type,
    parse_type,
    read_questions,
    substitute_placeholders,
    type_name,
)
from avpet_core.data.tokens import PAD_ID, UNK_ID
from fixtures_media import write_mp4

TRAIN = [
    {
        "video_id": "00000272",
        "question_id": 52,
        "type": '["Audio", "Counting"]',
        "question_content": "How many musical instruments were heard throughout the video?",
        "templ_values": "[]",
        "question_deleted": 0,
        "anser": "one",
    },
    {
        "video_id": "00000272",
        "question_id": 53,
        "type": '["Audio-Visual", "Temporal"]',
        "question_content": "Where is the <FL> sounding instrument?",
        "templ_values": '["first"]',
        "question_deleted": 0,
        "anser": "left",
    },
    {
        "video_id": "00000273",
        "question_id": 60,
        "type": '["Visual", "Location"]',
        "question_content": "Is the <Object> on the <LR> of the <Object>?",
        "templ_values": '["cello", "left", "piano"]',
        "question_deleted": 0,
        "anser": "yes",
    },
    {
        "video_id": "00000273",
        "question_id": 61,
        "type": '["Audio-Visual", "Existential"]',
        "question_content": "Is this sound from the instrument in the video?",
        "templ_values": "[]",
        "question_deleted": 1,
        "anser": "maybe",
    },
]


def write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def fake_media(video_id):
    return torch.zeros(10, 3, 48, 48), torch.zeros(10, 3, 64, 96)


def test_reads_the_real_format(tmp_path):
    questions = read_questions(write_json(tmp_path / "avqa-train.json", TRAIN))
    assert [q.question_id for q in questions] == [52, 53, 60]  # the deleted question is left out
    assert questions[1].question == "Where is the first sounding instrument?"
    assert questions[2].question == "Is the cello on the left of the piano?"
    assert QUESTION_TYPES[questions[1].type_index] == ("Audio-Visual", "Temporal")
    assert questions[0].answer == "one"
    assert len(read_questions(tmp_path / "avqa-train.json", drop_deleted=False)) == 4


def test_dataset_items_vocabularies_and_bookkeeping(tmp_path):
    train = MusicAVQA(write_json(tmp_path / "avqa-train.json", TRAIN), fake_media)
    assert train.answer_vocab == ("left", "one", "yes")
    assert train.question_vocab[:2] == ("<pad>", "<unk>") and "cello" in train.question_vocab
    item = train[2]
    assert set(item) == {"frames", "audio", "question", "question_length", "answer", "type", "question_id", "video_id"}
    length = int(item["question_length"])
    assert length == 9 and torch.all(item["question"][length:] == PAD_ID)
    words = [train.question_vocab[i] for i in item["question"][:length]]
    assert words == ["is", "the", "cello", "on", "the", "left", "of", "the", "piano"]
    assert train.answer_vocab[int(item["answer"])] == "yes"
    assert type_name(int(item["type"])) == "Visual/Location" and int(item["question_id"]) == 60
    assert train.type_counts == {"Audio/Counting": 1, "Audio-Visual/Temporal": 1, "Visual/Location": 1}
    # Val/test reuse the train vocabulary; a new word is <unk>.
    test_records = [dict(TRAIN[2], question_id=99, templ_values='["banjo", "left", "piano"]')]
    test = MusicAVQA(write_json(tmp_path / "avqa-test.json", test_records), fake_media, vocab=train.vocab)
    assert int(test[0]["question"][2]) == UNK_ID
    batch = torch.utils.data.default_collate([train[0], train[1]])
    assert batch["question"].shape == (2, 16) and batch["answer"].shape == (2,)


def test_lists_instead_of_json_strings_are_accepted(tmp_path):
    record = dict(TRAIN[2], type=["Visual", "Location"], templ_values=["cello", "left", "piano"])
    (question,) = read_questions(write_json(tmp_path / "q.json", [record]))
    assert question.question == "Is the cello on the left of the piano?"


@pytest.mark.parametrize("field", ["anser", "question_content", "templ_values", "type", "video_id"])
def test_missing_field_names_file_and_question(tmp_path, field):
    record = {k: v for k, v in TRAIN[1].items() if k != field}
    path = write_json(tmp_path / "avqa-val.json", [TRAIN[0], record])
    with pytest.raises(
        DatasetFormatError, match=rf"avqa-val\.json: question 1 \(question_id 53\): missing field\(s\) '{field}'"
    ):
        read_questions(path)


def test_answer_outside_the_train_vocabulary(tmp_path):
    train = MusicAVQA(write_json(tmp_path / "avqa-train.json", TRAIN), fake_media)
    bad = [dict(TRAIN[0], question_id=7, anser="eleven")]
    with pytest.raises(
        DatasetFormatError,
        match=r"avqa-test\.json: question 0 \(question_id 7\): answer 'eleven' is not in the answer vocabulary",
    ):
        MusicAVQA(write_json(tmp_path / "avqa-test.json", bad), fake_media, vocab=train.vocab)


def test_bad_type_placeholders_and_json(tmp_path):
    with pytest.raises(
        DatasetFormatError, match=r"q\.json: question 0 .*unknown question type \['Audio', 'Location'\]"
    ):
        read_questions(write_json(tmp_path / "q.json", [dict(TRAIN[0], type='["Audio", "Location"]')]))
    with pytest.raises(DatasetFormatError, match=r"question 0 .*1 placeholder\(s\) \['<FL>'\] .* but 0 templ_values"):
        read_questions(write_json(tmp_path / "q.json", [dict(TRAIN[1], templ_values="[]")]))
    with pytest.raises(DatasetFormatError, match=r"field 'templ_values' is not valid JSON"):
        read_questions(write_json(tmp_path / "q.json", [dict(TRAIN[1], templ_values="[first")]))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"video_id": "1",\n  "question_id": }\n]')
    with pytest.raises(DatasetFormatError, match=r"broken\.json:3: not valid JSON"):
        read_questions(broken)
    with pytest.raises(DatasetFormatError, match=r"absent\.json: question file not found"):
        read_questions(tmp_path / "absent.json")


def test_placeholder_substitution_in_order():
    text = substitute_placeholders(
        "Is the <Object> <BA> the <Object> on the <LRer>?", ["flute", "before", "cello", "leftmost"]
    )
    assert text == "Is the flute before the cello on the leftmost?"
    assert parse_type('["Audio-Visual", "Comparative"]') == QUESTION_TYPES.index(("Audio-Visual", "Comparative"))


def test_accuracy_by_type_gives_table_2_columns():
    types = torch.tensor([0, 0, 1, 2, 4, 8])
    correct = torch.tensor([True, False, True, True, False, True])
    result = accuracy_by_type(correct, types)
    assert result["Audio/Counting"] == 0.5 and result["Audio/Comparative"] == 1.0
    assert result["Audio"] == pytest.approx(2 / 3) and result["Visual"] == 1.0
    assert result["Audio-Visual"] == 0.5 and result["overall"] == pytest.approx(4 / 6)
    assert "Visual/Location" not in result


def test_vocab_pads_and_cuts():
    vocab = AVQAVocab(question_tokens=("<pad>", "<unk>", "a"), answers=("x",))
    ids, length = vocab.encode_question("a a a a", max_length=3)
    assert ids.tolist() == [2, 2, 2] and length == 3
    ids, length = vocab.encode_question("a b", max_length=4)
    assert ids.tolist() == [2, UNK_ID, PAD_ID, PAD_ID] and length == 2


def test_video_folder_media_samples_the_whole_video(tmp_path):
    write_mp4(tmp_path / "00000272.mp4", seconds=20)
    media = VideoFolderMedia(tmp_path, image_size=32)
    frames, audio = media("00000272")
    assert frames.shape == (10, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    assert audio.shape == (10, 3, 128, 96) and torch.isfinite(audio).all()
    # Segment t of a 20 s video is centred at 2t + 1 s: the colours of seconds 1, 3, 5, ...
    from fixtures_media import colour_of_second

    pixel = (frames[3, :, 16, 16] * 255).round()
    assert torch.allclose(pixel, torch.tensor(colour_of_second(7), dtype=torch.float32), atol=8)

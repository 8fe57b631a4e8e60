"""SynthAVE and SynthAVQA: determinism, label invariants, oracle bounds, caching, JSON export."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.utils.data import DataLoader

from avpet_core.audio import FbankConfig
from avpet_core.data import DatasetFormatError, MusicAVQA, QUESTION_TYPES
from avpet_core.data.synthetic import (
    AUDIBLE_OFFSCREEN,
    EVENT,
    INSTRUMENT_CLASSES,
    INSTRUMENTS,
    KIND_AUDIBLE,
    KIND_VISIBLE,
    MAX_CLASSES,
    NEITHER,
    NUMBER_WORDS,
    NuisanceConfig,
    POSITIONS,
    SEGMENT_KINDS,
    SYNTH_AVE_VITB,
    Scene,
    Source,
    SYNTH_AVQA_ANSWERS,
    SYNTH_FBANK_MICRO,
    SYNTH_FBANK_VITB,
    VISIBLE_SILENT,
    SynthAVE,
    SynthAVEConfig,
    SynthAVQA,
    SynthAVQAConfig,
    SynthAVQAMedia,
    class_spec,
    estimate_fbank_stats,
    oracle_accuracies,
    oracle_predictions,
    render_scene,
    sample_segment_kinds,
    synth_ave_video,
)
from avpet_core.files import CacheError

SMALL = SynthAVEConfig(num_videos=12, num_eval_videos=6)
SMALL_QA = SynthAVQAConfig(num_scenes=60, num_eval_scenes=20)


DRAWING_NUISANCES = {
    "min_scale",
    "max_scale",
    "max_rotation_deg",
    "position_drift",
    "colour_jitter",
    "num_clutter",
    "pixel_noise",
}
SOUND_NUISANCES = {"noise_rms", "pitch_jitter", "tempo_jitter"}


def items_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def perturbed(value: float | int) -> float | int:
    """Another value of a nuisance setting: one more clutter blob, or a larger amount."""
    return value + 1 if isinstance(value, int) else 2 * value + 0.01


# ----------------------------------------------------------------------------------- SynthAVE


def test_item_keys_shapes_and_ranges():
    dataset = SynthAVE(SMALL, "train")
    item = dataset[0]
    assert set(item) == {"frames", "audio", "labels", "video_id"}
    assert item["frames"].shape == (10, 3, 48, 48) and item["frames"].dtype == torch.float32
    assert 0.0 <= item["frames"].min() and item["frames"].max() <= 1.0
    assert item["audio"].shape == (10, 3, 64, 96) and item["audio"].dtype == torch.float32
    assert torch.equal(item["audio"][:, 0], item["audio"][:, 2])  # one spectrogram, three channels
    assert item["labels"].shape == (10,) and item["labels"].dtype == torch.int64
    assert item["video_id"] == "synthave-train-00000"
    assert dataset.num_classes == 11 and dataset.background_index == 10 == dataset.num_event_classes
    assert len(dataset.class_names) == 11 and dataset.class_names[-1] == "background"
    assert len(dataset) == 12 and len(SynthAVE(SMALL, "test")) == 6


def test_presets_tile_into_whole_patches():
    for fbank, patch in ((SYNTH_FBANK_MICRO, 8), (SYNTH_FBANK_VITB, 16)):
        assert fbank.num_mel_bins % patch == 0 and fbank.target_frames % patch == 0
    assert SYNTH_FBANK_MICRO.num_mel_bins * SYNTH_FBANK_MICRO.target_frames // 64 == 96  # audio tokens
    item = SynthAVE(dataclasses.replace(SYNTH_AVE_VITB, num_videos=1), "train")[0]
    assert item["frames"].shape == (10, 3, 224, 224) and item["audio"].shape == (10, 3, 128, 96)


def test_deterministic_by_seed_and_split():
    first, again = SynthAVE(SMALL, "train"), SynthAVE(SMALL, "train")
    assert items_equal(first[3], again[3])
    assert items_equal(first[3], first[3])
    other_seed = SynthAVE(dataclasses.replace(SMALL, seed=1), "train")[3]
    assert not torch.equal(first[3]["frames"], other_seed["frames"])
    assert not torch.equal(first[3]["frames"], SynthAVE(SMALL, "val")[3]["frames"])
    # Items do not depend on the order they are asked for (each has its own generator).
    assert items_equal(SynthAVE(SMALL, "train")[5], first[5])


def test_label_is_event_iff_visible_and_audible():
    dataset = SynthAVE(SMALL, "train")
    for index in range(len(dataset)):
        plan, labels = dataset.plan(index), dataset[index]["labels"]
        event = plan.visible & plan.audible
        assert torch.equal(labels == plan.class_index, event)
        assert torch.equal(labels == dataset.background_index, ~event)
        assert torch.equal(event, plan.kinds == EVENT)


def test_visibility_and_audibility_are_real():
    """The object is drawn exactly where visible; the sound is louder exactly where audible."""
    plain = dataclasses.replace(SMALL, num_clutter=0, pixel_noise=0.0, snr_db=(20.0, 20.0))
    dataset = SynthAVE(plain, "train")
    for index in range(len(dataset)):
        plan, video = dataset.plan(index), dataset.raw(index)
        spread = video["frames"].float().flatten(2).std(2).mean(1)  # a plain background is uniform
        assert torch.all(spread[plan.visible] > 10) and torch.all(spread[~plan.visible] < 1)
        energy = video["fbank"].float().mean((1, 2))
        if plan.audible.any() and (~plan.audible).any():
            assert energy[plan.audible].min() > energy[~plan.audible].max()


def test_kind_proportions_are_the_chains_stationary_distribution():
    config = SynthAVEConfig()
    kinds = sample_segment_kinds(config, torch.Generator().manual_seed(0), num_videos=4000)
    for k, share in enumerate(config.kind_proportions):
        for position in (0, 9):
            assert abs((kinds[:, position] == k).double().mean().item() - share) < 0.03
    assert config.background_proportions == pytest.approx(
        {"neither": 1 / 3, "visible_silent": 1 / 3, "audible_offscreen": 1 / 3}
    )
    # Sticky: runs are longer than for independent segments.
    same = (kinds[:, 1:] == kinds[:, :-1]).double().mean().item()
    independent = sum(p * p for p in config.kind_proportions)
    assert same > independent + 0.3


def test_oracle_bounds():
    oracle = oracle_accuracies(SynthAVEConfig())
    assert oracle["both"] == 1.0
    assert oracle["audio"] <= oracle["both"] - 0.15
    assert oracle["vision"] <= oracle["both"] - 0.15
    # Better than always answering "background" (60 % of segments).
    assert oracle["audio"] > 0.6 and oracle["vision"] > 0.6


def test_exact_oracle_matches_sampled_oracle():
    config = SynthAVEConfig()
    kinds = sample_segment_kinds(config, torch.Generator().manual_seed(1), num_videos=3000)
    exact = oracle_accuracies(config)
    for modality in ("audio", "vision", "both"):
        sampled = (oracle_predictions(kinds, modality, config) == (kinds == EVENT)).double().mean().item()
        assert abs(sampled - exact[modality]) < 0.02
    dataset = SynthAVE(dataclasses.replace(config, num_eval_videos=200), "val")
    assert abs(dataset.oracle_accuracy("audio") - exact["audio"]) < 0.04


def test_oracle_cannot_do_better_than_the_ambiguity_allows():
    """With independent segments the audio oracle's error is exactly the off-screen share."""
    config = SynthAVEConfig(stickiness=0.0)
    oracle = oracle_accuracies(config)
    assert oracle["audio"] == pytest.approx(1 - config.kind_proportions[AUDIBLE_OFFSCREEN])
    assert oracle["vision"] == pytest.approx(1 - config.kind_proportions[VISIBLE_SILENT])
    skewed = SynthAVEConfig(kind_proportions=(0.2, 0.2, 0.2, 0.4), stickiness=0.0)
    assert oracle_accuracies(skewed)["audio"] == pytest.approx(1 - 0.2)  # predicts background when audible


def test_kind_tables_agree_with_names():
    assert SEGMENT_KINDS[EVENT] == "event" and SEGMENT_KINDS[NEITHER] == "neither"
    assert KIND_VISIBLE.tolist() == [True, False, True, False]
    assert KIND_AUDIBLE.tolist() == [True, False, False, True]


def test_every_class_has_a_unique_look_and_sound():
    specs = [class_spec(k) for k in range(MAX_CLASSES)]
    assert len({(s.shape, s.texture, s.palette) for s in specs}) == MAX_CLASSES
    assert len({(s.sound, s.pitch_hz) for s in specs}) == MAX_CLASSES
    with pytest.raises(ValueError, match="num_classes"):
        SynthAVEConfig(num_classes=29)


def test_stored_fbank_statistics_match_a_fresh_estimate():
    for config in (SynthAVEConfig(seed=7), dataclasses.replace(SYNTH_AVE_VITB, seed=7)):
        mean, std = estimate_fbank_stats(config, num_videos=20, split="val")
        assert abs(mean - config.fbank.mean) < 0.35, (mean, config.fbank.mean)
        assert abs(std / config.fbank.std - 1) < 0.06, (std, config.fbank.std)
    normalised = SynthAVE(SynthAVEConfig(num_videos=8), "train")
    values = torch.stack([normalised.raw(i)["fbank"].float() for i in range(8)])
    assert abs(values.mean().item()) < 0.1 and abs(values.std().item() - 0.5) < 0.1  # (x - mean) / (2 std)


def test_disk_cache_gives_the_same_items(tmp_path, monkeypatch):
    fresh = SynthAVE(SMALL, "val")
    cached = SynthAVE(SMALL, "val", cache=tmp_path)
    assert cached.cache_path.is_file() and cached.cache_path.parent == tmp_path
    for index in range(len(fresh)):
        assert items_equal(fresh[index], cached[index])
    # A second dataset reads the file instead of generating.
    expected = fresh[2]
    monkeypatch.setattr("avpet_core.data.synthetic.ave.synth_ave_video", lambda *a: pytest.fail("regenerated"))
    assert items_equal(SynthAVE(SMALL, "val", cache=tmp_path)[2], expected)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_memory_cache_gives_the_same_items():
    memory = SynthAVE(SMALL, "train", cache="memory")
    assert items_equal(memory[1], SynthAVE(SMALL, "train")[1])
    assert items_equal(memory[1], memory[1])


def test_cache_with_nan_features_is_refused(tmp_path):
    cached = SynthAVE(SMALL, "test", cache=tmp_path)
    stored = torch.load(cached.cache_path, weights_only=True)
    stored["fbank"][0, 0, 0, 0] = float("nan")
    torch.save(stored, cached.cache_path)
    with pytest.raises(DatasetFormatError, match=r"synthave-.*-test\.pt: NaN"):
        SynthAVE(SMALL, "test", cache=tmp_path)


def test_unwritable_cache_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(CacheError, match="not-a-directory.*not writable"):
        SynthAVE(SMALL, "test", cache=blocker / "cache")


def test_default_collate_batches_items():
    batch = next(iter(DataLoader(SynthAVE(SMALL, "train"), batch_size=4)))
    assert batch["frames"].shape == (4, 10, 3, 48, 48)
    assert batch["audio"].shape == (4, 10, 3, 64, 96)
    assert batch["labels"].shape == (4, 10)
    assert len(batch["video_id"]) == 4


def test_synth_ave_takes_the_nuisances_as_its_own_fields():
    config = SynthAVEConfig(pixel_noise=0.0, min_scale=0.1)
    assert config.nuisance == NuisanceConfig(pixel_noise=0.0, min_scale=0.1)
    assert dataclasses.replace(config, num_clutter=1).nuisance.num_clutter == 1
    assert SynthAVEConfig(**dataclasses.asdict(config.nuisance)) == config
    assert SynthAVEConfig().nuisance == NuisanceConfig()  # NuisanceConfig's defaults are SynthAVE's


def test_every_nuisance_setting_changes_a_synth_ave_video():
    assert DRAWING_NUISANCES | SOUND_NUISANCES == {f.name for f in dataclasses.fields(NuisanceConfig)}
    # A video with the object shown and its sound heard, of a class whose look is not rotation-invariant.
    dataset = SynthAVE(SMALL)
    plans = [dataset.plan(i) for i in range(len(dataset))]
    index = next(i for i, plan in enumerate(plans) if plan.class_index != 0 and (plan.kinds == EVENT).any())
    base = synth_ave_video(SMALL, "train", index)
    for name in DRAWING_NUISANCES | SOUND_NUISANCES:
        config = dataclasses.replace(SMALL, **{name: perturbed(getattr(SMALL, name))})
        changed = synth_ave_video(config, "train", index)
        key = "frames" if name in DRAWING_NUISANCES else "fbank"
        assert not torch.equal(changed[key], base[key]), name


def test_raw_video_function_agrees_with_dataset():
    video = synth_ave_video(SMALL, "train", 4)
    item = SynthAVE(SMALL, "train")[4]
    assert torch.equal(video["labels"], item["labels"])
    assert torch.equal(video["frames"].float() / 255, item["frames"])
    assert video["fbank"].dtype == torch.float16 and torch.isfinite(video["fbank"].float()).all()


# ----------------------------------------------------------------------------------- SynthAVQA


def test_synth_avqa_items_and_vocabulary():
    train = SynthAVQA(SMALL_QA, "train")
    item = train[0]
    assert set(item) == {"frames", "audio", "question", "question_length", "answer", "type", "question_id", "video_id"}
    assert item["frames"].shape == (10, 3, 48, 48) and item["audio"].shape == (10, 3, 64, 96)
    assert item["question"].shape == (SMALL_QA.max_question_length,) and item["question"].dtype == torch.int64
    length = int(item["question_length"])
    assert 0 < length <= SMALL_QA.max_question_length
    assert torch.all(item["question"][length:] == 0) and torch.all(item["question"][:length] > 1)
    assert train.question_vocab[:2] == ("<pad>", "<unk>")
    assert train.answer_vocab == SYNTH_AVQA_ANSWERS
    assert {QUESTION_TYPES[q.type_index] for q in train.questions} == set(QUESTION_TYPES)
    test = SynthAVQA(SMALL_QA, "test")
    assert test.vocab == train.vocab  # val/test use the train vocabulary


def test_synth_avqa_config_holds_the_nuisances_it_renders_with():
    field_names = {f.name for f in dataclasses.fields(SynthAVQAConfig)}
    assert "nuisance" in field_names and "ave" not in field_names
    assert not field_names & (DRAWING_NUISANCES | SOUND_NUISANCES)  # no second copy of a setting
    assert SynthAVQAConfig().nuisance == NuisanceConfig(min_scale=0.12, max_scale=0.15, position_drift=0.02)
    # Round trip through SynthAVE's flat fields.
    nuisance = dataclasses.replace(SMALL_QA.nuisance, pixel_noise=0.1, num_clutter=0)
    assert SynthAVEConfig(**dataclasses.asdict(nuisance)).nuisance == nuisance
    assert SynthAVQAConfig(nuisance=SynthAVEConfig(**dataclasses.asdict(nuisance)).nuisance).nuisance == nuisance


def test_every_nuisance_setting_changes_a_synth_avqa_video():
    config = dataclasses.replace(SMALL_QA, num_segments=4)
    # An on-screen, sounding instrument whose look is not rotation-invariant (a triangle).
    instrument = INSTRUMENT_CLASSES.index(2)
    scene = Scene((Source(instrument, position=1, onset=0, offset=3, loud=True),))
    frames, wave = render_scene(scene, config, torch.Generator().manual_seed(0))
    for name in DRAWING_NUISANCES | SOUND_NUISANCES:
        nuisance = dataclasses.replace(config.nuisance, **{name: perturbed(getattr(config.nuisance, name))})
        changed = render_scene(scene, dataclasses.replace(config, nuisance=nuisance), torch.Generator().manual_seed(0))
        if name in DRAWING_NUISANCES:
            assert not torch.equal(changed[0], frames), name
        else:
            assert not torch.equal(changed[1], wave), name
    # And through the dataset: a noisier config gives other frames for the same question.
    noisy = dataclasses.replace(SMALL_QA, nuisance=dataclasses.replace(SMALL_QA.nuisance, pixel_noise=0.1))
    assert not torch.equal(SynthAVQA(noisy, "val")[0]["frames"], SynthAVQA(SMALL_QA, "val")[0]["frames"])
    assert SynthAVQA(noisy, "val").questions == SynthAVQA(SMALL_QA, "val").questions


def test_synth_avqa_is_deterministic():
    a, b = SynthAVQA(SMALL_QA, "val"), SynthAVQA(SMALL_QA, "val")
    assert [q.question for q in a.questions] == [q.question for q in b.questions]
    assert items_equal(a[7], b[7])
    other = SynthAVQA(dataclasses.replace(SMALL_QA, seed=3), "val")
    assert [q.question for q in a.questions] != [q.question for q in other.questions]


def test_synth_avqa_answers_follow_the_scene():
    dataset = SynthAVQA(SMALL_QA, "train")
    scenes = {f"synthavqa-train-{i:05d}": scene for i, scene in enumerate(dataset.scenes)}
    checked = 0
    for question, values in zip(dataset.questions, dataset.templ_values):
        scene = scenes[question.video_id]
        group_kind = QUESTION_TYPES[question.type_index]
        seen = scene.on_screen
        if group_kind == ("Audio", "Counting"):
            assert question.answer == NUMBER_WORDS[sum(s.sounds for s in scene.sources)]
        elif group_kind == ("Audio-Visual", "Counting"):
            assert question.answer == NUMBER_WORDS[sum(s.sounds for s in seen)]
        elif group_kind == ("Visual", "Location"):
            (at,) = [s for s in seen if POSITIONS[s.position] == values[0]]
            assert question.answer == INSTRUMENTS[at.instrument]
        elif group_kind == ("Audio-Visual", "Existential"):
            named = [s for s in seen if INSTRUMENTS[s.instrument] == values[0]]
            assert question.answer == ("yes" if any(s.sounds for s in named) else "no")
        elif group_kind == ("Audio-Visual", "Location"):
            pick = min if values[0] == "first" else max
            sounding = [s for s in scene.sources if s.sounds]
            starter = pick(sounding, key=lambda s: s.onset)
            assert question.answer == POSITIONS[starter.position]
        else:
            continue
        checked += 1
    assert checked > 50


def test_json_export_reads_back_with_the_music_avqa_loader(tmp_path):
    synthetic = SynthAVQA(SMALL_QA, "val")
    path = synthetic.write_json(tmp_path / "synth-avqa-val.json")
    records = json.loads(path.read_text())
    keys = {"video_id", "question_id", "type", "question_content", "templ_values", "anser", "question_deleted"}
    assert set(records[0]) == keys
    assert isinstance(records[0]["type"], str)
    assert json.loads(records[0]["type"])[0] in ("Audio", "Visual", "Audio-Visual")
    assert any("<" in r["question_content"] for r in records)  # placeholders kept, values separate
    loaded = MusicAVQA(path, SynthAVQAMedia(SMALL_QA), vocab=synthetic.vocab)
    assert len(loaded) == len(synthetic)
    assert [q.question for q in loaded.questions] == [q.question for q in synthetic.questions]
    assert loaded.type_counts == synthetic.type_counts
    for index in (0, 5, len(synthetic) - 1):
        assert items_equal(loaded[index], synthetic[index])
    # The question words the loader collects from the exported train split are SynthAVQA's.
    train = SynthAVQA(SMALL_QA, "train")
    from_json = MusicAVQA(train.write_json(tmp_path / "train.json"), SynthAVQAMedia(SMALL_QA))
    assert from_json.question_vocab == train.question_vocab
    assert set(from_json.answer_vocab) <= set(SYNTH_AVQA_ANSWERS)


def test_synth_avqa_media_rejects_foreign_ids():
    with pytest.raises(DatasetFormatError, match="not a SynthAVQA video id"):
        SynthAVQAMedia(SMALL_QA)("00000272")


def test_synth_avqa_fbank_is_normalised():
    audio = SynthAVQA(SMALL_QA, "train")[0]["audio"]
    assert torch.isfinite(audio).all() and audio.abs().mean() < 2
    assert isinstance(SMALL_QA.fbank, FbankConfig)


def test_synth_avqa_media_without_memory_renders_the_same():
    dataset = SynthAVQA(SMALL_QA, "val")
    frames, audio = SynthAVQAMedia(SMALL_QA, keep=0)(dataset.questions[3].video_id)
    item = dataset[3]
    assert torch.equal(frames, item["frames"]) and torch.equal(audio, item["audio"])

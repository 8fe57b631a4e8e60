"""Named experiments and the `avpet train` / `avpet reproduce` commands (on tiny data, random weights)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from avpet_core import cli, experiments
from avpet_core.data.synthetic import SynthAVEConfig, SynthAVQAConfig

TINY_DATA = SynthAVEConfig(num_videos=8, num_eval_videos=4)


@pytest.fixture(autouse=True)
def tiny_experiments(monkeypatch):
    tiny = {
        name: replace(
            e, data=TINY_DATA, training=replace(e.training, epochs=1, batch_size=4, eval_batch_size=4), head_hidden=16
        )
        for name, e in experiments.EXPERIMENTS.items()
    }
    monkeypatch.setattr(experiments, "EXPERIMENTS", tiny)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_rows_carry_the_papers_numbers():
    assert [experiments.get_experiment(n).paper for n in experiments.TABLES["table4"]] == [72.01, 72.71, 74.68, 75.65]
    assert [experiments.get_experiment(n).paper for n in experiments.TABLES["table1"]] == [75.30, 75.65]
    with pytest.raises(experiments.ExperimentError, match="unknown experiment 'table4/all'"):
        experiments.get_experiment("table4/all")


def test_train_json_and_resume(capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", "--experiment", "table4/both", "--random-weights", "--json", "--run-dir", str(run_dir)
    )
    assert code == 0, err
    row = json.loads(out)
    assert row["name"] == "table4/both" and row["paper"] == 75.65
    assert 0.0 <= row["test_accuracy"] <= 1.0 and len(row["history"]) == 1
    assert row["ours_setting"] == "micro_vit (random weights), SynthAVE, cpu"
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "log.csv").is_file()
    assert json.loads((run_dir / "best.json").read_text())["metadata"]["experiment"] == "table4/both"

    code, out, err = run_cli(
        capsys,
        "train",
        "--experiment",
        "table4/both",
        "--random-weights",
        "--json",
        "--run-dir",
        str(run_dir),
        "--resume",
    )
    assert code == 0, err
    again = json.loads(out)
    assert (
        again["history"] == row["history"] and again["test_accuracy"] == row["test_accuracy"]
    )  # nothing left to train


def test_reproduce_table4_json(capsys):
    code, out, err = run_cli(capsys, "reproduce", "table4", "--random-weights", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["name"] for r in rows] == ["table4/none", "table4/audio", "table4/visual", "table4/both"]
    adapters = [r["adapter_parameters"] for r in rows]
    assert adapters[0] == 0 and adapters[1] == adapters[2] == adapters[3] // 2 > 0
    assert all(r["trainable_parameters"] > r["adapter_parameters"] for r in rows)  # the head trains too


def test_reproduce_prints_ours_beside_the_papers(capsys):
    code, out, err = run_cli(capsys, "reproduce", "table1", "--random-weights")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("ours: micro_vit (random weights), SynthAVE, cpu  |  paper: ")
    assert "LAVISH" in lines[2] and "75.30%" in lines[2] and "75.65%" in lines[3]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--experiment", "table4/both", "--data", "ave"], "data 'ave' needs --data-root"),
        (
            ["train", "--experiment", "table4/both", "--resume", "--random-weights"],
            "resuming needs the run directory of the run (--run-dir)",
        ),
        (["train", "--experiment", "table4/both", "--device", "cuda", "--random-weights"], None),
    ],
)
def test_errors_are_one_line(capsys, argv, message):
    import torch

    if message is None:
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        message = "no CUDA device"
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


# -- Table 2 (AVQA) ---------------------------------------------------------------------------

TINY_AVQA = SynthAVQAConfig(num_scenes=3, num_eval_scenes=2, num_segments=4)


@pytest.fixture
def tiny_avqa(tiny_experiments, monkeypatch):
    """Table 2's rows on three SynthAVQA scenes; one thread, since tiny batches gain nothing from a second."""
    for name in experiments.TABLES["table2"]:
        e = experiments.EXPERIMENTS[name]
        monkeypatch.setitem(
            experiments.EXPERIMENTS, name, replace(e, data=TINY_AVQA, training=replace(e.training, num_threads=1))
        )


def test_table2_rows_carry_the_papers_numbers():
    from avpet_core.adapters import LAVISH_AVQA

    rows = [experiments.get_experiment(n) for n in experiments.TABLES["table2"]]
    assert [r.name for r in rows] == ["table2/none", "table2/lavish", "table2/avpea"]
    assert all(r.task == "avqa" and r.head == "avst" and r.streams == "both" for r in rows)
    none, lavish, avpea = rows
    assert (
        none.adapter == "none" and none.paper is None and none.paper_columns == () and none.paper_parameters_m is None
    )
    assert lavish.adapter == "lavish" and lavish.adapter_config == LAVISH_AVQA
    assert LAVISH_AVQA.num_latents == 64 and LAVISH_AVQA.groups == 4 and not LAVISH_AVQA.batch_norm
    assert dict(lavish.paper_columns) == {"audio": 73.14, "visual": 68.73, "audio_visual": 64.93, "group_mean": 68.93}
    assert dict(avpea.paper_columns) == {"audio": 76.16, "visual": 78.82, "audio_visual": 69.72, "group_mean": 74.90}
    assert (
        (lavish.paper, avpea.paper) == (68.93, 74.90)
        and lavish.paper_parameters_m == (4.4, 13.1)
        and avpea.paper_parameters_m == (3.7, 12.4)
    )
    for row in (lavish, avpea):  # the paper's Avg is the mean of its three group columns
        columns = dict(row.paper_columns)
        assert (columns["audio"] + columns["visual"] + columns["audio_visual"]) / 3 == pytest.approx(
            row.paper, abs=0.005
        )
    assert all("AV-PEA Table 2" in r.paper_setting and "MUSIC-AVQA" in r.paper_setting for r in rows)


def test_reproduce_table2_json_counts_and_columns(capsys, tiny_avqa):
    from avpet_core.adapters import AVPEAConfig, LAVISH_AVQA
    from avpet_core.tasks.avqa import AVQA_METRIC_KEYS

    code, out, err = run_cli(capsys, "reproduce", "table2", "--random-weights", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["name"] for r in rows] == ["table2/none", "table2/lavish", "table2/avpea"]
    none, lavish, avpea = rows
    micro = dict(dim=96, blocks=4, streams=2)
    assert none["adapter_parameters"] == 0 and none["trainable_parameters"] > 0  # the head alone trains
    assert (
        lavish["adapter_parameters"]
        == LAVISH_AVQA.num_parameters(micro["dim"]) * 2 * micro["blocks"] * micro["streams"]
    )
    assert (
        avpea["adapter_parameters"] == AVPEAConfig().num_parameters(micro["dim"]) * micro["blocks"] * micro["streams"]
    )
    heads = {r["trainable_parameters"] - r["adapter_parameters"] for r in rows}
    assert len(heads) == 1  # the same AVST head on every row
    for r in rows:
        assert r["task"] == "avqa" and r["ours_setting"] == "micro_vit (random weights), SynthAVQA, cpu"
        assert list(r["test"]) == list(AVQA_METRIC_KEYS.values()) and r["test"]["accuracy"] == r["test_accuracy"]
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert set(r["history"][0]) >= {"val_accuracy", "val_audio", "val_visual", "val_audio_visual", "val_group_mean"}
        majority = r["baselines"]["majority_answer"]
        assert majority == rows[0]["baselines"]["majority_answer"] and 0.0 <= majority["accuracy"] <= 1.0
    assert none["paper"] is None and none["paper_columns"] == {}
    assert (
        avpea["paper_columns"]["group_mean"] == avpea["paper"] == 74.90 and avpea["paper_adapter_parameters_m"] == 3.7
    )
    assert lavish["paper_trainable_parameters_m"] == 13.1


def test_reproduce_table2_prints_ours_beside_the_papers(capsys, tiny_avqa):
    code, out, err = run_cli(capsys, "reproduce", "table2", "--random-weights")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "ours: micro_vit (random weights), SynthAVQA, cpu  |  paper: "
        "MUSIC-AVQA, ViT-B/16 (ImageNet-21k), AVST head (AV-PEA Table 2)"
    )
    assert lines[1].split()[-5:] == ["Audio", "Visual", "A-V", "Avg", "overall"]
    assert lines[2].startswith("AVST, frozen ViT, no adapter") and " ours " in lines[2] and "0.000M" in lines[2]
    assert lines[3].split() == ["paper"] + ["-"] * 7
    assert lines[5].split() == ["paper", "4.4M", "13.1M", "73.14", "68.73", "64.93", "68.93", "-"]
    assert lines[6].startswith("AVST + AV-PEA")
    assert lines[7].split() == ["paper", "3.7M", "12.4M", "76.16", "78.82", "69.72", "74.90", "-"]
    assert lines[8].startswith("majority answer of the train split")
    assert "Audio-Visual/Temporal" in out and lines[-10].split()[-3:] == ["none", "lavish", "avpea"]


def test_train_table2_text_and_log(capsys, tiny_avqa, tmp_path):
    code, out, err = run_cli(
        capsys, "train", "--experiment", "table2/avpea", "--random-weights", "--run-dir", str(tmp_path)
    )
    assert code == 0, err
    assert "AVST + AV-PEA: test accuracy" in out and "paper 74.9%" in out and "3.7M" in out
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert (
        header.startswith("epoch,train_loss,val_accuracy,val_audio_counting,") and "val_audio_visual_temporal" in header
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["train", "--experiment", "table2/avpea", "--data", "ave"],
            "data 'ave' does not fit table2/avpea (task avqa); choose 'synth' or 'music-avqa'",
        ),
        (
            ["train", "--experiment", "table4/both", "--data", "music-avqa"],
            "data 'music-avqa' does not fit table4/both (task avel); choose 'synth' or 'ave'",
        ),
        (["reproduce", "table2", "--data", "music-avqa"], "data 'music-avqa' needs --data-root"),
        (
            ["train", "--experiment", "table2/none", "--data", "music-avqa", "--data-root", "/nonexistent/MUSIC-AVQA"],
            "MUSIC-AVQA directory not found",
        ),
    ],
)
def test_table2_errors_are_one_line(capsys, tiny_avqa, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_missing_music_avqa_files_are_one_line(capsys, tiny_avqa, tmp_path):
    (tmp_path / "videos").mkdir()
    code, out, err = run_cli(
        capsys, "train", "--experiment", "table2/avpea", "--data", "music-avqa", "--data-root", str(tmp_path)
    )
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "avqa-train.json: question file not found" in err


def test_a_seed_study_does_not_depend_on_the_order_of_its_runs():
    """Every run seeds itself: rows x seeds trained row by row equal the same runs trained seed by seed
    (the chapters' references were made in both orders), and ``done`` runs are kept, not retrained."""
    names, seeds = ["table4/none", "table4/audio"], [0, 1]
    settings = experiments.RunSettings(pretrained=False)
    splits = experiments.datasets(experiments.get_experiment(names[0]), settings)
    by_row = experiments.run_over_seeds(names, settings, seeds, splits=splits)
    for seed in seeds:
        for name in names:
            alone = experiments.run_experiment(name, replace(settings, seed=seed), splits=splits)
            timeless = [
                [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in run.fit.history]
                for run in (alone, by_row[name][seed])
            ]
            assert alone.test == by_row[name][seed].test and timeless[0] == timeless[1]
    again = experiments.run_over_seeds(names, settings, seeds, splits=splits, done=by_row)
    assert all(again[n][s] is by_row[n][s] for n in names for s in seeds)


def test_reproduce_with_seeds_prints_the_table_over_seeds(capsys):
    code, out, err = run_cli(capsys, "reproduce", "table1", "--random-weights", "--seeds", "0", "1")
    assert code == 0, err
    assert "test accuracy (%)" in out and "minus lavish" in out and "verdict" in out and "seed 1" in out
    code, out, err = run_cli(capsys, "reproduce", "table1", "--random-weights", "--seeds", "0", "1", "--json")
    rows = json.loads(out)["rows"]
    assert [(r["name"], r["seed"]) for r in rows] == [
        ("table1/lavish", 0),
        ("table1/lavish", 1),
        ("table1/avpea", 0),
        ("table1/avpea", 1),
    ]

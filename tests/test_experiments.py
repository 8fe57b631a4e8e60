"""Named experiments and the `avpet train` / `avpet reproduce` commands (on tiny data, random weights)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from avpet_core import cli, experiments
from avpet_core.data.synthetic import SynthAVEConfig

TINY_DATA = SynthAVEConfig(num_videos=8, num_eval_videos=4)


@pytest.fixture(autouse=True)
def tiny_experiments(monkeypatch):
    tiny = {name: replace(e, data=TINY_DATA, training=replace(e.training, epochs=1, batch_size=4, eval_batch_size=4), head_hidden=16)
            for name, e in experiments.EXPERIMENTS.items()}
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
    code, out, err = run_cli(capsys, "train", "--experiment", "table4/both", "--random-weights", "--json", "--run-dir", str(run_dir))
    assert code == 0, err
    row = json.loads(out)
    assert row["name"] == "table4/both" and row["paper"] == 75.65
    assert 0.0 <= row["test_accuracy"] <= 1.0 and len(row["history"]) == 1
    assert row["ours_setting"] == "micro_vit (random weights), SynthAVE, cpu"
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "log.csv").is_file()
    assert json.loads((run_dir / "best.json").read_text())["metadata"]["experiment"] == "table4/both"

    code, out, err = run_cli(capsys, "train", "--experiment", "table4/both", "--random-weights", "--json", "--run-dir", str(run_dir), "--resume")
    assert code == 0, err
    again = json.loads(out)
    assert again["history"] == row["history"] and again["test_accuracy"] == row["test_accuracy"]  # nothing left to train


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
        (["train", "--experiment", "table4/both", "--resume", "--random-weights"], "resuming needs the run directory of the run (--run-dir)"),
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

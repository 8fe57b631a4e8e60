"""The ``avpet`` command line, and the parameter accounting (avpet_core.params) behind ``avpet params``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import avpet_core
from avpet_core import cli
from avpet_core.backbones import micro_vit as pretrain
from avpet_core.backbones import MICRO_VIT, create_backbone
from avpet_core.params import ParamCounts, count_parameters, millions

VIT_B16 = "vit_base_patch16_224.augreg_in21k"


def vit_parameter_count(*, dim: int, depth: int, patch: int, img: int, mlp_ratio: float, chans: int = 3) -> int:
    """Parameters of a timm ViT with a CLS token and no head, counted from the architecture."""
    hidden = int(dim * mlp_ratio)
    patch_embed = dim * chans * patch * patch + dim
    tokens = 1 + (img // patch) ** 2
    block = (
        2 * dim  # norm1
        + dim * 3 * dim
        + 3 * dim  # qkv
        + dim * dim
        + dim  # proj
        + 2 * dim  # norm2
        + dim * hidden
        + hidden  # fc1
        + hidden * dim
        + dim  # fc2
    )
    return patch_embed + dim + tokens * dim + depth * block + 2 * dim  # + cls, pos_embed, final norm


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------
# params (the library)


def test_vit_b16_parameter_count_formula():
    assert vit_parameter_count(dim=768, depth=12, patch=16, img=224, mlp_ratio=4.0) == 85_798_656


def test_count_parameters_frozen_vs_unfrozen():
    frozen = count_parameters(create_backbone(MICRO_VIT, freeze=True))
    trainable = count_parameters(create_backbone(MICRO_VIT, freeze=False))
    expected = vit_parameter_count(dim=96, depth=4, patch=8, img=48, mlp_ratio=2.0)
    assert frozen == ParamCounts(trainable=0, frozen=expected)
    assert trainable == ParamCounts(trainable=expected, frozen=0)
    assert frozen.total == trainable.total == expected
    assert frozen.trainable_share == 0.0 and trainable.trainable_share == 1.0


def test_count_parameters_partially_frozen():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))  # 55 + 12 parameters
    model[0].requires_grad_(False)
    counts = count_parameters(model)
    assert (counts.trainable, counts.frozen, counts.total) == (12, 55, 67)
    assert counts.trainable_share == pytest.approx(12 / 67)
    assert counts.as_dict() == {"trainable": 12, "frozen": 55, "total": 67, "trainable_share": pytest.approx(12 / 67)}


def test_shared_parameters_are_counted_once():
    shared = nn.Linear(4, 4)  # 20 parameters
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_parameters(model).total == 20
    # tied weights between two different modules
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    assert count_parameters(nn.ModuleList([a, b])) == ParamCounts(trainable=9, frozen=0)


def test_empty_model_has_zero_share():
    counts = count_parameters(nn.ReLU())
    assert counts.total == 0 and counts.trainable_share == 0.0


def test_millions():
    assert millions(3_843_072) == "3.84M"
    assert millions(85_798_656, digits=1) == "85.8M"
    assert millions(0) == "0.00M"


# --------------------------------------------------------------------------------------------
# avpet --version


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"avpet {avpet_core.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", avpet_core.__version__)


def test_version_as_module_subprocess(tmp_path):
    env = {**os.environ, "AVPET_CACHE_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "avpet_core.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"avpet {avpet_core.__version__}"


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, err = run_cli(capsys)
    assert code == 2
    assert "params" in out and "pretrain" in out and "usage: avpet" in out


# --------------------------------------------------------------------------------------------
# avpet params


def test_params_json_micro_vit(capsys):
    code, out, err = run_cli(capsys, "params", "--json")
    assert code == 0, err
    result = json.loads(out)  # exactly one JSON document on stdout
    assert isinstance(result, dict)
    assert {"adapter", "trainable", "frozen", "total"} <= result.keys()
    expected = sum(p.numel() for p in create_backbone(MICRO_VIT).parameters())
    assert result["backbone"] == MICRO_VIT
    assert result["adapter"] == 0
    assert result["trainable"] == 0
    assert result["frozen"] == result["total"] == expected
    assert result["total"] == vit_parameter_count(dim=96, depth=4, patch=8, img=48, mlp_ratio=2.0)
    assert err == ""


def test_params_text_output(capsys):
    code, out, err = run_cli(capsys, "params")
    assert code == 0, err
    total = sum(p.numel() for p in create_backbone(MICRO_VIT).parameters())
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["backbone"] == MICRO_VIT
    assert lines["trainable"] == "0.000M"
    assert lines["total"] == millions(total, 3) == lines["frozen"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_params_json_vit_b16(capsys):
    code, out, err = run_cli(capsys, "params", "--backbone", VIT_B16, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["backbone"] == VIT_B16
    assert result["total"] == 85_798_656  # ViT-B/16, no head
    assert result["total"] == vit_parameter_count(dim=768, depth=12, patch=16, img=224, mlp_ratio=4.0)
    assert result["trainable"] == 0 and result["frozen"] == result["total"]


def test_params_unknown_backbone_exits_2_with_one_line(capsys):
    code, out, err = run_cli(capsys, "params", "--backbone", "vitt_base_patch16_224", "--json")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("avpet params: error: unknown backbone 'vitt_base_patch16_224'")
    assert "Did you mean" in lines[0]
    assert "Traceback" not in err


def test_params_unknown_adapter_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["params", "--adapter", "lora"])
    assert info.value.code == 2
    assert "invalid choice: 'lora'" in capsys.readouterr().err


def test_params_non_vit_backbone_exits_2(capsys):
    code, out, err = run_cli(capsys, "params", "--backbone", "resnet18")
    assert code == 2 and "resnet18" in err and len(err.strip().splitlines()) == 1


def test_params_bad_pretrained_tag_exits_2(capsys):
    code, out, err = run_cli(capsys, "params", "--backbone", "vit_base_patch16_224.augreg_in21kk")
    assert code == 2 and "augreg_in21kk" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# avpet pretrain (never the default two-minute pretraining)


def test_pretrain_non_writable_cache_exits_2_before_training(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    target = blocker / "sub"
    monkeypatch.setenv("AVPET_CACHE_DIR", str(target))

    def fail(*args, **kwargs):
        raise AssertionError("must not train")

    monkeypatch.setattr(pretrain, "pretrain_micro_vit", fail)
    code, out, err = run_cli(capsys, "pretrain", "--json")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"avpet pretrain: error: {target}: cache directory is not writable")


def test_pretrain_json_reports_the_record(capsys, monkeypatch, tmp_path, tiny_pretrain_config):
    monkeypatch.setenv("AVPET_CACHE_DIR", str(tmp_path))
    real = pretrain.pretrained_micro_vit
    seen = []

    def tiny(config=None, **kwargs):
        seen.append(kwargs)
        return real(tiny_pretrain_config, **kwargs)

    monkeypatch.setattr(pretrain, "pretrained_micro_vit", tiny)
    code, out, err = run_cli(capsys, "pretrain", "--json")
    assert code == 0, err
    assert seen == [{"retrain": False, "progress": False}]  # --json: no progress bar on stdout
    result = json.loads(out)
    record = json.loads(pretrain.cache_paths(tiny_pretrain_config)[1].read_text())
    assert result["test_accuracy"] == record["test_accuracy"]
    assert result["history"] == record["history"]
    assert result["train_seconds"] == record["train_seconds"]
    # the reported path is the default configuration's cache file, under $AVPET_CACHE_DIR
    assert result["weights"] == str(pretrain.cache_paths(pretrain.PretrainConfig())[0])
    assert result["weights"].startswith(str(tmp_path))

    code, out, err = run_cli(capsys, "pretrain", "--retrain", "--json")
    assert code == 0 and seen[-1] == {"retrain": True, "progress": False}
    assert json.loads(out)["test_accuracy"] == record["test_accuracy"]  # deterministic retraining


def test_params_counts_agree_with_torch(capsys):
    """The CLI counts what torch counts, for a timm backbone built the same way."""
    code, out, _ = run_cli(capsys, "params", "--backbone", "vit_tiny_patch16_224", "--json")
    assert code == 0
    model = create_backbone("vit_tiny_patch16_224")
    assert (
        json.loads(out)["total"]
        == sum(p.numel() for p in model.parameters())
        == vit_parameter_count(dim=192, depth=12, patch=16, img=224, mlp_ratio=4.0)
    )
    assert all(isinstance(p, torch.nn.Parameter) and not p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------------------------
# avpet params --adapter / --streams / --preset


@pytest.mark.parametrize(
    "backbone,adapter,extra,expected,paper",
    [
        (VIT_B16, "avpea", [], 3_559_728, 3_700_000),
        ("vit_large_patch16_224.augreg_in21k", "avpea", [], 12_638_304, 12_900_000),
        (VIT_B16, "lavish", [], 3_843_168, 3_900_000),
        ("vit_large_patch16_224.augreg_in21k", "lavish", ["--preset", "ave"], 13_394_112, 13_400_000),
        (VIT_B16, "houlsby", [], 3_559_704, None),
        (VIT_B16, "avpea", ["--streams", "audio"], 3_559_728 // 2, None),
        (VIT_B16, "lavish", ["--preset", "avqa"], 48 * (64 * 768 + 2 * 768 * 96 // 4 + 4 * 768 + 2), None),
    ],
)
def test_params_adapters_json(capsys, backbone, adapter, extra, expected, paper):
    code, out, err = run_cli(capsys, "params", "--backbone", backbone, "--adapter", adapter, *extra, "--json")
    assert code == 0, err
    result = json.loads(out)
    frozen = 85_798_656 if backbone == VIT_B16 else 303_301_632
    assert result["adapter"] == result["closed_form"] == result["trainable"] == expected
    assert result["frozen"] == frozen and result["total"] == frozen + expected
    assert result["adapter_share"] == pytest.approx(expected / (frozen + expected))
    assert result["paper_adapter"] == paper
    assert result["method"] == adapter and result["adapter_config"]["method"] == adapter


def test_params_adapter_text_puts_the_paper_beside_ours(capsys):
    code, out, err = run_cli(capsys, "params", "--backbone", VIT_B16, "--adapter", "avpea")
    assert code == 0, err
    adapter_line = next(line for line in out.splitlines() if line.startswith("adapter"))
    assert "avpea(d=96" in adapter_line and "3.560M" in adapter_line and "paper 3.7M" in adapter_line


def test_params_preset_needs_lavish(capsys):
    code, out, err = run_cli(capsys, "params", "--adapter", "avpea", "--preset", "avqa")
    assert code == 2 and out == ""
    assert err.strip() == "avpet params: error: --preset applies to --adapter lavish only, not 'avpea'"


def test_params_adapter_on_a_large_backbone_downloads_and_allocates_nothing(capsys):
    """ViT-L is built on the meta device: no weights, no memory, no network (blocked in the tests)."""
    code, out, err = run_cli(
        capsys, "params", "--backbone", "vit_large_patch16_224.augreg_in21k", "--adapter", "lavish", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["total"] == 303_301_632 + 13_394_112


def test_cli_names_the_micro_vit_like_the_backbones():
    """cli.py names it itself so that torch loads only after the pins (see avpet_core.reproducibility)."""
    from avpet_core import backbones, cli

    assert cli.MICRO_VIT == backbones.MICRO_VIT


def test_env_command_reports_the_numeric_environment(capsys):
    from avpet_core.cli import main

    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"torch", "cpu_vendor", "cpu_capability", "mkl_cbwr", "threads", "pinned"} <= set(report["environment"])

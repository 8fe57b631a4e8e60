"""``avpet bench``: the report's structure, FLOP counts and ratios, the device table, the command.

No test asserts a time: timings vary with the machine and its load; the benchmark prints them.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from avpet_core import bench, cli
from avpet_core.bench import VARIANTS, BenchConfig, BenchError, Variant, format_report, peak_bf16_flops, run_bench

SMALL = BenchConfig(batch=2, repeats=1, warmup=0)


@pytest.fixture(scope="module")
def report():
    return run_bench(SMALL)


def test_every_variant_is_measured_with_its_ratios(report):
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == list(VARIANTS)
    for row in rows.values():
        assert row["step_seconds"] > 0 and len(row["step_seconds_all"]) == 1
        assert row["clips_per_second"] == pytest.approx(2 / row["step_seconds"])
        assert row["cpu_seconds"] >= 0 and len(row["cpu_seconds_all"]) == 1
        assert row["flops"] > 0 and row["memory_bytes"] > 0 and row["mfu"] is None  # no MFU on CPU
        assert report["ratios"][row["name"]]["vs"] == row["baseline"]
    for baseline in ("frozen/infer", "full/train"):
        assert rows[baseline]["time_ratio"] == rows[baseline]["flop_ratio"] == rows[baseline]["memory_ratio"] == 1.0
    assert {rows[n]["baseline"] for n in rows if n.endswith("/infer")} == {"frozen/infer"}
    assert {rows[n]["baseline"] for n in rows if n.endswith("/train")} == {"full/train"}
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["input"]["frames"] == [2, 1, 3, 48, 48]


def test_flop_counts_follow_the_models(report):
    rows = {row["name"]: row for row in report["rows"]}
    frozen = rows["frozen/infer"]["flops"]
    for method in ("avpea", "lavish", "houlsby"):  # the adapters add a few percent to the frozen forward
        assert 1.0 < rows[f"{method}/infer"]["flops"] / frozen < 1.1
    # the head-only step adds only the head's backward; full fine-tuning about twice the forward again
    assert 1.0 <= rows["frozen/train"]["flops"] / frozen < 1.01
    assert 2.9 < rows["full/train"]["flops"] / frozen < 3.1
    assert rows["avpea/train"]["flops"] < rows["full/train"]["flops"]
    width = bench.create_backbone(bench.MICRO_VIT).embed_dim
    assert (
        rows["frozen/infer"]["trainable_parameters"]
        == rows["frozen/train"]["trainable_parameters"]
        == (2 * width + 1) * 11
    )
    assert rows["full/train"]["trainable_parameters"] > rows["avpea/train"]["trainable_parameters"]


def test_the_table_prints_every_row_with_its_ratios(report):
    text = format_report(report)
    for name in VARIANTS:
        assert name in text
    assert "1.000x" in text and "micro_vit" in text and "alternating" in text


def test_a_subset_brings_its_baselines():
    config = bench.resolve(BenchConfig(variants=("avpea/train",)))
    assert config.variants == ("avpea/train", "full/train")
    with pytest.raises(BenchError, match="unknown variant"):
        bench.resolve(BenchConfig(variants=("trimodal/train",)))
    assert bench.resolve(BenchConfig(device="cuda", backbone="vit_base_patch16_224")).batch == 64


def test_a_new_method_is_one_entry(monkeypatch):
    """A trimodal adapter would be one more Variant with its own builder and inputs."""

    def build(setup):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * setup.shape.image**2, bench.CLASSES))

    def inputs(shape, device):
        return (torch.rand(shape.batch, 3, shape.image, shape.image, device=device),), torch.zeros(
            shape.batch, dtype=torch.long
        )

    monkeypatch.setitem(
        VARIANTS, "linear/train", Variant("linear/train", "a linear model", True, "full/train", build, inputs)
    )
    result = run_bench(replace(SMALL, variants=("linear/train",), memory=False))
    rows = {row["name"]: row for row in result["rows"]}
    assert set(rows) == {"linear/train", "full/train"}
    # the forward product and the weight gradient's (the input needs no gradient)
    assert rows["linear/train"]["flops"] == 2 * (2 * 2 * (3 * 48 * 48) * bench.CLASSES)


def test_device_peaks_by_name():
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("Some Future Accelerator") is None


def test_bench_command_json(capsys):
    code = cli.main(["bench", "--batch", "2", "--repeats", "1", "--variants", "avpea/infer", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    report = json.loads(out)
    assert [row["name"] for row in report["rows"]] == ["frozen/infer", "avpea/infer"]
    assert report["ratios"]["avpea/infer"]["vs"] == "frozen/infer"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_bench_without_a_gpu_is_one_clear_error(capsys):
    code = cli.main(["bench", "--device", "cuda", "--json"])
    out, err = capsys.readouterr()
    assert (
        code == 2
        and out == ""
        and err.strip().splitlines()
        == ["avpet bench: error: device 'cuda' was asked for, but PyTorch sees no CUDA device"]
    )

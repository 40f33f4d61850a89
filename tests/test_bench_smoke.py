"""Smoke test of `make bench` (bench/bench_mlm.py): the exact command runs end to end at a tiny size and writes a
well-formed bench/results.json and docs/bench.md. It checks structure and internal consistency, never speed:
speed claims come from the real `make bench` run on a quiet machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytest.importorskip("transformers", reason="the bench compares against transformers (a test-only dependency)")


def test_bench_runs_tiny_and_writes_consistent_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "results.json", tmp_path / "bench.md"
    command = [sys.executable, "-m", "bench.bench_mlm", "--tiny", "--seq-lens", "16", "24", "--batch-size", "2",
               "--rounds", "2", "--warmup", "1", "--peak-size", "128", "--json", str(out_json),
               "--markdown", str(out_md)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    report = json.loads(out_json.read_text())
    assert {"date", "machine", "settings", "results", "targets"} <= set(report)
    assert report["machine"]["logical_cores"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["machine"]["cpu"] and report["machine"]["torch"]
    assert [block["seq_len"] for block in report["results"]] == [16, 24]
    for block in report["results"]:
        assert block["matmul_peak_flops"] >= block["torch_matmul_peak_flops"] > 0
        variants = block["variants"]
        assert {row["implementation"] for row in variants.values()} == {"transformers", "minibert"}
        references = {row["precision"]: row for row in variants.values() if row["implementation"] == "transformers"}
        assert set(references) == {"fp32", "bf16"} and references["fp32"]["ratio_vs_transformers"] == pytest.approx(1)
        for row in variants.values():
            reference = references[row["precision"]]
            assert row["ratio_same_precision"] == pytest.approx(row["tokens_per_s"] / reference["tokens_per_s"])
            peak = block["bf16_matmul_peak_flops"] if row["precision"] == "bf16" else block["matmul_peak_flops"]
            assert len(row["step_s_all"]) == 2 and min(row["step_s_all"]) > 0
            assert row["step_s_min"] <= row["step_s_median"] <= row["step_s_max"]
            assert row["tokens_per_s"] == pytest.approx(2 * block["seq_len"] / row["step_s_median"])
            assert row["ratio_vs_transformers"] == pytest.approx(row["tokens_per_s"] / references["fp32"]["tokens_per_s"])
            assert 0 < row["masked_fraction"] < 1 and row["useful_flops_per_token"] > 0
            assert row["mfu"] == pytest.approx(row["tokens_per_s"] * row["useful_flops_per_token"] / peak)
            assert 0 < row["mfu"] <= row["mfu_vs_torch_matmul"]
    # One verdict per target, row and sequence length: (a) rows have a ratio target, (b) rows a ratio and an MFU.
    per_block = {"(a)": 1, "(b)": 2}
    expected = sum(per_block.get(row["setting"], 0) for b in report["results"] for row in b["variants"].values())
    assert expected >= 2 * 3 and len(report["targets"]) == expected
    for check in report["targets"]:
        assert check["met"] == (check["value"] >= check["target"])

    markdown = out_md.read_text()
    assert "| setting | T | implementation" in markdown
    assert report["machine"]["cpu"] in markdown and f"torch {report['machine']['torch']}" in markdown
    busy = max(max(b["load_average_1min"]) for b in report["results"]) > report["machine"]["logical_cores"]
    assert ("shared the CPU with other processes" in markdown) == busy  # a noisy run says so
    for setting in ("(a)", "(a) dense", "(b)", "bf16"):
        rows = sum(row["setting"] == setting for b in report["results"] for row in b["variants"].values())
        assert rows >= 2 and sum(line.startswith(f"| {setting} |") for line in markdown.splitlines()) == rows


def test_the_dense_row_computes_the_sparse_heads_loss_at_every_position():
    """`(a) dense` does transformers' work (vocabulary logits at all B·T positions) for the same loss: the gap between
    the (a) rows is the sparse head's alone."""
    import torch
    from conftest import tiny_config

    from bench.bench_mlm import dense_mlm_loss, make_batches
    from minibert import BertForMaskedLM

    config = tiny_config()
    model = BertForMaskedLM(config).eval()
    (batch,) = make_batches(config, batch_size=3, seq_len=12, mask_rate=0.3, count=1, seed=0)
    torch.testing.assert_close(dense_mlm_loss(model)(**batch).loss, model(**batch).loss)


@pytest.mark.parametrize("flags, message", [
    (["--rounds", "0"], "argument --rounds: 0 is below 1"),
    (["--num-batches", "0"], "argument --num-batches: 0 is below 1"),
    (["--vocab-size", "5"], "argument --vocab-size: 5 is below 6"),
    (["--device", "gpu"], "--device gpu: must be cpu, cuda or cuda:N"),
    (["--seq-lens", "2"], "--seq-lens [2]: each must be in [3, max_position_embeddings=512]"),
])
def test_bench_bad_flags_are_one_line(flags, message, capsys):
    from bench.bench_mlm import cli

    assert cli(flags) == 2  # before any model is built or any file written
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err

"""Smoke test of `make gpu-check` in its CPU mode (DEVICE=cpu): the exact make target, in its no-install form
(SETUP=none with this interpreter), runs at tiny sizes inside its 60-second budget and writes a well-formed report.
It checks the schema and the correctness verdicts, never speed: speed is measured by the real run on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

pytest.importorskip("transformers", reason="gpu-check compares against transformers (a test-only dependency)")

SECTIONS = {"correctness", "throughput", "syncs", "profile", "pretrain", "pipeline", "base"}


def test_gpu_check_cpu_smoke_mode_writes_the_report(tmp_path):
    command = ["make", "-s", "gpu-check", "DEVICE=cpu", "SETUP=none", f"PYTHON={sys.executable}",
               f"ARGS=--out {tmp_path}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_results.json").read_text())
    assert report["mode"] == "smoke" and report["budget_s"] == 60
    assert {"torch", "transformers", "python", "device"} <= set(report["environment"])
    # Every section either ran (with its result) or is named in `skipped`: nothing disappears silently.
    ran = set(report["sections"])
    assert ran | {s.split(" ")[0] for s in report["skipped"]} == SECTIONS
    assert "correctness" in ran  # the first section always fits
    checks = report["sections"]["correctness"]["result"]
    assert {"hf_parity_fp32", "gradients_vs_cpu_fp32", "bf16_loss_vs_fp32", "fp16_grad_scaler",
            "out_of_range_token_id", "finetune_cls_bf16"} <= set(checks)
    for name, check in checks.items():
        assert check["passed"], (name, check)
        assert {"value", "limit", "detail", "seconds"} <= set(check)
    if "throughput" in ran:
        rows = report["sections"]["throughput"]["result"]["results"][0]["variants"]
        assert {r["implementation"] for r in rows.values()} == {"transformers", "minibert"}
        assert all(r["tokens_per_s"] > 0 and r["warmup_s"] > 0 for r in rows.values())
    if "pipeline" in ran:
        assert report["sections"]["pipeline"]["result"]["batches_per_s"] > 0
    if "pretrain" in ran:
        result = report["sections"]["pretrain"]["result"]
        assert result["exit"] == 0 or "stopped after" in result["error"][0]  # ran, or was cut at the budget
    assert [v["target"] for v in report["verdicts"]][:1] == ["BERT-mini recipe vs transformers (tokens/s ratio)"]
    # The smoke mode writes into --out only: the committed GPU page is never replaced by CPU numbers.
    page = (tmp_path / "gpu.md").read_text()
    assert "not yet measured" in page and "| check | limit | value | passed |" in page
    assert "SKIPPED" in done.stdout or not report["skipped"]  # whatever was skipped is printed

    # The GPU page, rendered from this report as if an H100 had produced it: every section renders, and the MFU
    # targets are judged against the H100's datasheet bf16 peak.
    from bench.gpu_report import render_markdown, verdicts

    report.update(mode="gpu", environment={**report["environment"], "gpu": "NVIDIA H100 80GB HBM3", "driver": "x"})
    page = render_markdown(report)
    assert "GPU NVIDIA H100 80GB HBM3, driver x" in page and "Status: not yet measured" not in page
    if "throughput" in ran:
        mini_mfu = [v for v in verdicts(report) if v["target"].startswith("BERT-mini recipe, MFU")][0]
        assert mini_mfu["value"] is not None and mini_mfu["met"] == (mini_mfu["value"] >= 0.20)


def test_committed_gpu_page_matches_its_renderer():
    """docs/gpu.md is what bench/gpu_report.py renders from the committed bench/gpu_results.json; without a GPU run,
    every number says "not yet measured"."""
    from bench.gpu_report import render_markdown

    results = REPO_ROOT / "bench" / "gpu_results.json"
    report = json.loads(results.read_text()) if results.exists() else None
    assert (REPO_ROOT / "docs" / "gpu.md").read_text() == render_markdown(report)


def test_the_pipeline_section_names_a_missing_corpus(tmp_path, monkeypatch):
    import bench.gpu_check as gpu_check

    monkeypatch.setattr(gpu_check, "REPO_ROOT", tmp_path)  # a checkout where the pretrain section cached nothing
    with pytest.raises(RuntimeError, match="no cached embedded corpus in .*: the pretrain section did not run"):
        gpu_check.input_pipeline(tmp_path / "out", tiny=False, gpu_steps_per_s=None)


def test_the_bench_page_names_the_model_it_timed():
    from bench.report import model_name

    assert [model_name({"model": m, "tiny": t}) for m, t in (("mini", False), ("base", False), ("base", True))] == \
        ["BERT-mini", "BERT-base", "a tiny smoke-test model"]

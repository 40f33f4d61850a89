"""The correctness half of `make gpu-check`: does the CUDA path compute what the CPU path computes?

Each check returns {"value", "limit", "passed", "detail"}. fp32 checks run with TF32 OFF (torch's default for
matmuls, set explicitly here for cuDNN too): TF32 rounds matmul inputs to 10 mantissa bits, which would drown a
1e-4 comparison. On the CPU (the smoke mode of `make test`) the same checks run at a tiny size, so the code of
every check is exercised without a GPU; "vs the CPU" then compares the CPU with itself.

Dimension legend: B batch, T sequence length, V vocabulary size.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from minibert import BertConfig, BertForMaskedLM
from minibert.checkpoint import save_pretrained
from minibert.training.device import make_grad_scaler

REPO_ROOT = Path(__file__).resolve().parent.parent


def result(value: float, limit: float, passed: bool, detail: str = "") -> dict:
    return {"value": float(value), "limit": limit, "passed": bool(passed), "detail": detail}


def mlm_batch(config: BertConfig, B: int, T: int, device, seed: int = 0, padded: bool = True) -> dict:
    """B rows of random ids with 15% MLM labels; with `padded`, row b keeps T - 2b real tokens (the rest is
    padding, masked out by attention_mask): the museum's fp16 case needs real padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (B, T), generator=g)  # [B,T]
    lengths = torch.clamp(T - 2 * torch.arange(B), min=2) if padded else torch.full((B,), T)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # [B,T]
    chosen = (torch.rand(B, T, generator=g) < 0.15) & mask.bool()
    chosen[:, 1] = True  # at least one prediction per row
    labels = torch.where(chosen, ids, -100)
    return {k: v.to(device) for k, v in {"input_ids": ids.masked_fill(chosen, 4), "attention_mask": mask,
                                          "labels": labels}.items()}


def hf_parity_fp32(config: BertConfig, device) -> dict:
    """The MLM logits of minibert and of transformers' BertForMaskedLM holding the same weights, fp32."""
    import transformers

    model = BertForMaskedLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, Path(folder), format="hf")
        hf = transformers.BertForMaskedLM.from_pretrained(folder, attn_implementation="sdpa").eval().to(device)
    model.to(device)
    batch = mlm_batch(config, 4, 32, device)
    with torch.no_grad():
        ours = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B,T,V]
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()  # compare real tokens: padded positions are free to differ
    diff = (ours[real] - theirs[real]).abs().max().item()
    return result(diff, 1e-4, diff <= 1e-4, "max |logit difference| over real tokens")


def gradients_vs_cpu(config: BertConfig, device) -> dict:
    """One training forward+backward on `device` and on the CPU from the same weights: per tensor,
    ‖g_device − g_cpu‖ / ‖g_cpu‖, the worst tensor reported."""
    cpu_model = BertForMaskedLM(config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    dev_model = copy.deepcopy(cpu_model).to(device)
    batch = mlm_batch(config, 4, 32, "cpu")
    cpu_model(**batch).loss.backward()
    dev_model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
    worst, name = 0.0, ""
    dev_grads = dict(dev_model.named_parameters())
    for n, p in cpu_model.named_parameters():
        if p.grad is None or p.grad.norm() == 0:
            continue
        rel = ((dev_grads[n].grad.cpu() - p.grad).norm() / p.grad.norm()).item()
        worst, name = max((worst, name), (rel, n))
    return result(worst, 1e-4, worst <= 1e-4, f"worst tensor: {name}")


def bf16_loss(config: BertConfig, device) -> dict:
    """The MLM loss under bf16 autocast against fp32, relative difference."""
    model = BertForMaskedLM(config).eval().to(device)
    batch = mlm_batch(config, 4, 32, device)
    with torch.no_grad():
        fp32 = model(**batch).loss.item()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            bf16 = model(**batch).loss.item()
    rel = abs(bf16 - fp32) / abs(fp32)
    return result(rel, 1e-2, rel <= 1e-2, f"fp32 {fp32:.5f}, bf16 {bf16:.5f}")


def fp16_grad_scaler(config: BertConfig, device) -> dict:
    """fp16 autocast through a PADDED attention mask gives a finite loss (the bug museum's -inf/-1e9 case), and a
    GradScaler whose scale is absurd (2^100) overflows, skips that step (weights unchanged) and backs off."""
    device = torch.device(device)
    model = BertForMaskedLM(config).to(device)
    batch = mlm_batch(config, 4, 32, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    assert make_grad_scaler(device, torch.float16).is_enabled()  # the scaler the training loops build for fp16
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0 ** 100)  # an absurd scale: fp16 gradients overflow
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.autocast(device.type, dtype=torch.float16):
        loss = model(**batch).loss
    finite = bool(torch.isfinite(loss))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    unchanged = all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
    backed_off = scaler.get_scale() < 2.0 ** 100
    return result(float(finite and unchanged and backed_off), 1.0, finite and unchanged and backed_off,
                  f"loss finite {finite}, overflowed step skipped {unchanged}, scale backed off {backed_off}")


def out_of_range_id(config: BertConfig, device) -> dict:
    """An id ≥ V must give our one-line ValueError, and the device must still work afterwards (a device-side assert
    would leave the CUDA context unusable)."""
    model = BertForMaskedLM(config).to(device)
    ids = torch.full((1, 8), config.vocab_size, device=device)  # [1,8], one past the end
    try:
        model(ids)
        message = "no error"
    except ValueError as error:
        message = str(error)
    alive = torch.ones(2, device=device).sum().item() == 2.0
    ok = "outside [0, vocab_size" in message and "\n" not in message and alive
    return result(float(ok), 1.0, ok, message[:160])


def small_corpus(out: Path) -> Path:
    """A 40-document generated corpus for the smoke mode (and the resume check): seconds to make and to train on."""
    from pretrain.corpus import generate_corpus

    path = out / "small_corpus.tsv"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        generate_corpus(path, num_docs=40, seed=3)
    return path


def resume_round_trip(device: str, out: Path, tiny: bool) -> dict:
    """A pretraining run SIGKILLed in step 6 (checkpoint at 4) and resumed: its loss curve must equal the
    uninterrupted run's within 1e-5 (fp32, deterministic algorithms; the caller sets CUBLAS_WORKSPACE_CONFIG)."""
    corpus = small_corpus(out)  # small: this checks determinism, not learning
    size = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
            "--model.intermediate_size", "64"] if tiny else []
    common = ["--corpus", str(corpus), "--cache-dir", str(out / "cache"), "--device", device, "--precision", "fp32",
              "--max-len", "32", "--batch-size", "8", "--max-steps", "8", "--checkpoint-every", "4",
              "--log-every", "1", "--eval-every", "8", "--eval-sequences", "16", "--matmul-peak-gflops", "1",
              "--model.hidden_dropout_prob", "0.1", *size]
    runner = ("import sys, torch; torch.use_deterministic_algorithms(True, warn_only=True); "
              "from pretrain.__main__ import main; sys.exit(main(sys.argv[1:]))")

    def run(folder: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", runner, *common, "--out", str(out / folder), *extra],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=170)

    run("uninterrupted", "--overwrite")
    crashed = run("crashed", "--overwrite", "--simulate-crash-at-step", "6")
    resumed = run("crashed", "--resume")
    if resumed.returncode != 0:
        return result(float("inf"), 1e-5, False, f"crash exit {crashed.returncode}; resume failed: "
                                                 f"{resumed.stderr.strip().splitlines()[-1:]}")

    def curve(folder: str) -> dict:
        lines = (out / folder / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}
    a, b = curve("uninterrupted"), curve("crashed")
    if sorted(a) != sorted(b) or not a:
        return result(float("inf"), 1e-5, False, f"logged steps differ: {sorted(a)} vs {sorted(b)}")
    worst = max(abs(a[s] - b[s]) / max(abs(a[s]), 1e-12) for s in a)
    return result(worst, 1e-5, worst <= 1e-5, f"{len(a)} logged steps, worst relative loss difference")


def finetune_run(task: str, precision: str, device: str, out: Path, tiny: bool) -> dict:
    """A short fine-tuning run from random init on the task's embedded data: it must finish (the fp16 GradScaler,
    autocast and the fused optimizer all on the way) with a finite dev metric."""
    from finetune.__main__ import main

    folder = out / f"{task}-{precision}"
    argv = ["--task", task, "--init", "random", "--device", device, "--precision", precision, "--epochs", "1",
            "--max-steps", "4" if tiny else "40", "--max-length", "32" if tiny else "128", "--out", str(folder),
            "--no-progress", "--overwrite"]
    if tiny:
        out.mkdir(parents=True, exist_ok=True)
        tiny_config = BertConfig.mini(20000).replace(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=64)
        tiny_config.to_json(out / "tiny_config.json")
        argv += ["--model-config", str(out / "tiny_config.json")]
    code = main(argv)
    summary = json.loads((folder / "metrics.json").read_text()) if code == 0 else {}
    value = (summary.get("best") or {}).get(summary.get("metric"), float("nan"))
    ok = code == 0 and math.isfinite(value)
    return result(value, 0.0, ok, f"exit {code}, dev {summary.get('metric', '?')} after a short run")

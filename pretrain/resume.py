"""断点续训 Resume is a contract: a run continues only with exactly what it started with.

A checkpoint records a FINGERPRINT of the run: the corpus and vocab digests (the bytes, not the paths), the model
config, and every flag that changes the data stream or the schedule. `--resume` compares it with the new command
line and refuses ANY difference in one line that names what changed. The trap it closes: a corpus with the same
shape but other IDs, or a new `--lr`, would otherwise train on silently, and `vocab.txt` would label embedding rows
with the wrong tokens.

To continue from the old weights with other settings, start a NEW run from them: `--init <out>/final` (or
`--init <out>/checkpoint.pt` for an unfinished run), which gets a fresh optimizer and schedule and keeps the
model's vocab.

A run that diverges (TrainingDiverged) stops before any checkpoint holds non-finite weights, and its message says
which flags to change and which checkpoint is still good.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch

from minibert.checkpoint import CheckpointError, load_pretrained
from minibert.cli import RunFailed
from minibert.checkpoint.pretrained import json_object, require_finite
from minibert.config import ACTIVATIONS
from minibert.training.checkpoint import load_training_state, save_training_state
from minibert.training.io import atomic_write_bytes, atomic_write_text
from pretrain.budget import recorded_budget
from pretrain.config import PretrainConfig, flag_name
from pretrain.data import file_digest

# The only flags that may differ on --resume: where and how fast the run executes, how often it reports, and
# which files it reads them from (the bytes are compared through the digests). Every OTHER field of
# PretrainConfig is in the fingerprint, so a new flag joins the contract without any change here.
MAY_CHANGE = ("device", "num_threads", "progress", "compile", "matmul_peak_gflops", "log_every", "eval_every",
              "eval_sequences", "checkpoint_every", "resume", "overwrite", "export_hf", "simulate_crash_at_step",
              "out", "cache_dir", "corpus", "vocab", "init")


def fingerprint(cfg: PretrainConfig, corpus_digest: str, vocab_digest: str, model_config: dict) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint (the flags as the user gave them)."""
    flags = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in MAY_CHANGE and f.name != "model"}
    return {"corpus": corpus_digest, "vocab": vocab_digest, "model": model_config, **flags}


def check_fingerprint(saved: dict | None, current: dict, checkpoint: Path) -> None:
    """Raises ValueError naming every difference between the checkpoint's fingerprint and this run's."""
    final = checkpoint.parent / "final"
    weights = final if (final / "model.safetensors").is_file() else checkpoint
    hint = (f"to go on with these settings, start a new run from the old weights: --init {weights} with another "
            f"--out (or --overwrite)")
    if saved is None:
        raise ValueError(f"resume: {checkpoint} records no run fingerprint (an older minibert wrote it), so a "
                         f"resume cannot be checked; {hint}")
    changed = []
    for key in sorted(set(saved) | set(current)):
        before, after = saved.get(key), current.get(key)
        if before == after:
            continue
        if key in ("corpus", "vocab"):
            changed.append(f"the {key} file's contents (digest {str(before)[:8]} -> {str(after)[:8]})")
        elif key == "model":
            diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
            changed.append("the model config " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(diff.items())))
        else:
            changed.append(f"{flag_name(key)} {before} -> {after}")
    if changed:
        allowed = ", ".join(flag_name(name) for name in MAY_CHANGE  # the ones a user would change
                            if name not in ("resume", "overwrite", "simulate_crash_at_step", "init"))
        raise ValueError(f"resume: this run differs from the one in {checkpoint}: {'; '.join(changed)}. Only "
                         f"{allowed} may change on --resume; {hint}")


def save_checkpoint(path: Path, run_fingerprint: dict, plan, **state) -> None:
    """save_training_state (minibert/training/checkpoint.py) plus what a resume needs besides the weights: the
    run's fingerprint, and --time-budget's decisions (plan, pretrain/budget.py; None for a --max-steps run), so a
    resumed run keeps the step count it was planned with instead of timing the machine again."""
    save_training_state(path, **state, extra={"fingerprint": run_fingerprint, **(plan.record() if plan else {})})


def load_checkpoint(path: Path, run_fingerprint: dict, **state) -> dict:
    """load_training_state, which first refuses a checkpoint whose fingerprint differs from this run's."""
    return load_training_state(path, **state, check=lambda extra: check_fingerprint(extra.get("fingerprint"),
                                                                                     run_fingerprint, path))


def check_start(cfg: PretrainConfig) -> tuple[Path, Path] | None:
    """The checks made before any work (folders are folders, --resume has a checkpoint, an --out that holds a run
    is replaced only with --overwrite, --init exists), and for --init: (weights path, the vocab.txt that labels its
    embedding rows); None without --init.

    A model folder (<out>/final, or any minibert/HF folder) carries its vocab.txt; a run's checkpoint.pt uses the
    vocab.txt its run folder holds. A --vocab that differs from it is refused: rows would get the wrong tokens.
    """
    for flag, folder in (("--out", cfg.out), ("--cache-dir", cfg.cache_dir)):
        if Path(folder).exists() and not Path(folder).is_dir():
            raise ValueError(f"{flag} {folder} is a file, not a folder; pass a folder path")
    checkpoint = Path(cfg.out) / "checkpoint.pt"
    if cfg.resume and not checkpoint.is_file():  # say so now, not after encoding the corpus
        raise FileNotFoundError(f"resume: no checkpoint at {checkpoint}; run without --resume to start fresh, or "
                                f"pass the --out folder of the run to continue")
    if cfg.resume and cfg.time_budget and recorded_budget(checkpoint) is None:
        raise ValueError(f"--time-budget {cfg.time_budget} with --resume: {checkpoint} was written by a step-based "
                         f"run; resume it with its --max-steps instead")
    finetuned = [Path(cfg.out) / name for name in ("finetune_config.json", "best") if (Path(cfg.out) / name).exists()]
    if finetuned:  # even with --overwrite: its vocab.txt and metrics.jsonl would be replaced, its model left stale
        raise ValueError(f"--out {cfg.out} holds a fine-tuning run ({finetuned[0]}); pretraining would replace its "
                         f"vocab.txt and metrics.jsonl: pass another --out")
    results = Path(cfg.out) / "results.json"
    if not cfg.resume and results.exists() and not cfg.overwrite:  # a finished run may be an hour's encoder
        raise ValueError(f"--out {cfg.out} holds a finished run ({finished_summary(results)}); pass --overwrite to "
                         f"replace it (make pretrain ARGS=--overwrite), or another --out to keep it")
    if not cfg.resume and checkpoint.exists() and not cfg.overwrite:
        raise ValueError(f"--out {cfg.out} holds an unfinished run ({checkpoint}); pass --resume to continue it, "
                         f"--overwrite to start over, or another --out")
    if cfg.init is None:
        return None
    if cfg.resume:
        raise ValueError("--init starts a NEW run from old weights, --resume continues one exactly: pass only one")
    path = Path(cfg.init)
    folder = path.parent if path.is_file() else path
    vocab = folder / "vocab.txt"
    if not path.exists():
        raise FileNotFoundError(f"--init {path}: not found; pass a model folder such as runs/pretrain/final, or a "
                                f"run's checkpoint.pt")
    if not vocab.is_file():
        raise FileNotFoundError(f"--init {path}: no vocab.txt in {folder}; the model's vocabulary is needed to "
                                f"keep token ids meaning the same tokens")
    if cfg.vocab is not None and file_digest(cfg.vocab) != file_digest(vocab):
        raise ValueError(f"--vocab {cfg.vocab} differs from the vocab of --init ({vocab}): the embedding rows "
                         f"would be read as other tokens; leave --vocab out to use the model's")
    return path, vocab


def started_from_init(cfg: PretrainConfig) -> bool:
    """Whether the run that --resume continues was started with --init, as its pretrain_config.json (written
    before its first step) says: --init is not repeated on --resume, and such a run is full-size from step 0, so
    it must not be rebuilt as the small model a fresh run grows from."""
    record = Path(cfg.out) / "pretrain_config.json"
    try:
        return cfg.resume and bool(json.loads(record.read_text(encoding="utf-8")).get("init"))
    except (OSError, ValueError, AttributeError):  # absent or damaged: load_checkpoint then says what misfits
        return False


def finished_summary(results: Path) -> str:
    """What a finished run's results.json says, for the refusal to overwrite it: its steps and held-out accuracy."""
    try:
        record = json.loads(results.read_text())
        return f"{record['max_steps']:,} steps, held-out acc {record['eval_acc']:.3f}, {results}"
    except (ValueError, KeyError, TypeError):  # a results.json this version did not write: name the file only
        return str(results)


def choose_vocab(cfg: PretrainConfig, init: tuple[Path, Path] | None) -> str | None:
    """The vocab.txt to encode with: --init's, else --vocab, else on --resume the run's own <out>/vocab.txt (so a
    resumed run never rebuilds a vocab), else None (build one from the corpus)."""
    if init is not None:
        return str(init[1])
    own = Path(cfg.out) / "vocab.txt"
    if cfg.vocab is None and cfg.resume and own.is_file():
        return str(own)
    return cfg.vocab


def load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """Fills `model` (built from this run's config) with the --init weights; every tensor must be finite."""
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        except Exception as error:
            raise ValueError(f"--init {path}: not a readable training checkpoint ({type(error).__name__}); pass "
                             f"a run's checkpoint.pt or a model folder") from None
        for name, tensor in state.items():
            require_finite(tensor, name, f"--init {path}")
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1].strip()
            raise ValueError(f"--init {path}: its model does not match this run's config ({first}); use the same "
                             f"--set/--model overrides as the run that wrote it") from None
        return
    try:
        loaded = load_pretrained(type(model), path, config=model.config)
    except CheckpointError as error:
        same = ("; this run builds its model from its own flags, not from the folder's config.json: use the same "
                "--set/--model overrides as the run that wrote it") if "shape mismatch" in str(error) else ""
        raise ValueError(f"--init {path}: {error}{same}") from None
    # Shapes were checked above; these two change the function without changing a shape, so weights trained under
    # one would silently run under the other. Read raw: the weights, not config.json, gave the shapes (absent
    # fields take HF's and Google's defaults; Google's bert_config.json has no layer_norm_eps)
    raw = json_object(loaded.source.config_path)
    saved = {"hidden_act": raw.get("hidden_act", "gelu"), "layer_norm_eps": raw.get("layer_norm_eps", 1e-12)}
    if saved["hidden_act"] not in ACTIVATIONS:
        raise ValueError(f"--init {path}: its weights were trained with hidden_act {saved['hidden_act']!r}, which "
                         f"minibert does not implement (it has {', '.join(ACTIVATIONS)}); pick another --init")
    changed = {name: value for name, value in saved.items() if value != getattr(model.config, name)}
    if changed:
        raise ValueError(f"--init {path}: its weights were trained with " + ", ".join(
            f"{name} {value!r} (this run: {getattr(model.config, name)!r})" for name, value in changed.items())
            + "; pass " + " ".join(f"--set {name}={value}" for name, value in changed.items()))
    model.load_state_dict(loaded.model.state_dict())


def prepare_out_folder(cfg: PretrainConfig, log, start_step: int, vocab_path: Path, first_record: dict) -> None:
    """Rank 0's files before the first step. A resumed run drops the log lines the killed run wrote after its last
    checkpoint (they will be redone); a fresh run deletes a finished run's files and writes its config, its vocab
    (--resume and --init read it) and the step-0 evaluation."""
    out = Path(cfg.out)
    if cfg.resume:
        kept = [record for record in log.read() if record["step"] <= start_step]
        atomic_write_text(log.path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in kept))
        return
    out.mkdir(parents=True, exist_ok=True)
    for stale in (log.path, out / "checkpoint.pt", out / "results.json"):
        stale.unlink(missing_ok=True)
    atomic_write_text(out / "pretrain_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    atomic_write_bytes(out / "vocab.txt", vocab_path.read_bytes())
    log.write(first_record)


def read_digests(corpus) -> tuple[str, str]:
    """(corpus digest, vocab digest) of an EncodedCorpus, from the cache's meta.json and the vocab file."""
    meta = json.loads((corpus.directory / "meta.json").read_text())
    return meta["corpus_digest"], file_digest(corpus.vocab_path)


class TrainingDiverged(RunFailed):
    """The loss or the gradient became inf/NaN: the run stops (exit 1) and keeps its last good checkpoint."""


def divergence_message(step: int, loss: float, grad_norm: float, cfg: PretrainConfig, checkpoint_path: Path,
                       last_checkpoint: int) -> str:
    """Names the flags that can make a run diverge (not only --lr) and a checkpoint only if one exists."""
    kept = (f"the last good checkpoint (step {last_checkpoint}) is kept at {checkpoint_path}"
            if checkpoint_path.is_file() else "no checkpoint was written yet")
    return (f"training diverged at step {step}: loss {loss}, gradient norm {grad_norm}; {kept}. Lower --lr (now "
            f"{cfg.lr}), lengthen --warmup-fraction (now {cfg.warmup_fraction}), keep --grad-clip on (now "
            f"{cfg.grad_clip}) or check --set overrides (now {cfg.model}), then start again")

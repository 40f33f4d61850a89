"""What a pretraining run leaves behind (section 6 of pretrain/train.py), written by rank 0 after the last step:

    <out>/final/          the model in minibert format (model.safetensors, config.json, vocab.txt), with the
                          count tables `python -m minibert.explain fill_mask` compares it against
    <out>/final_hf/       the same weights in Hugging Face layout (--export-hf)
    <out>/loss_curve.png  loss, held-out accuracy against the count baselines, the plateau diagnostics
    <out>/results.json    the final held-out metrics, the baselines, max_steps and the wall time

Every file goes to a temporary name first and is renamed into place, so an interrupted export never leaves a
half-written file that looks finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from minibert.checkpoint import save_pretrained
from minibert.training.io import atomic_write_text
from pretrain.baselines import export_count_tables, standing
from pretrain.diagnostics import plot_run


def write_outputs(model, cfg, out: Path, corpus, corpus_path: Path, heldout_docs, yardsticks: tuple,
                  final_eval: dict, max_steps: int, started: float, log_path: Path, say) -> dict:
    """Writes the files above and prints the run's last two lines. Returns results.json's content.

    Args:
        yardsticks: (unigram, bigram_counts, baselines) as pretrain.evaluation.heldout_yardsticks returned them.
        final_eval: the last evaluation's metrics; started: time.monotonic() when the command started.
    """
    unigram, bigram_counts, baselines = yardsticks
    save_pretrained(model, out / "final", format="minibert", vocab=corpus.vocab_path)
    export_count_tables(out / "final", bigram_counts, corpus_path, corpus, heldout_docs, cfg.max_len)
    if cfg.export_hf:
        save_pretrained(model, out / "final_hf", format="hf", vocab=corpus.vocab_path)
    plot_run(log_path, out / "loss_curve.png", f"MLM pretraining, {out.name}", baselines)
    result = {**final_eval, **baselines, "unigram_token": unigram["token"], "unigram_ppl": unigram["perplexity"],
              "max_steps": max_steps, "time_budget": cfg.time_budget or None,
              "wall_s": round(time.monotonic() - started, 1)}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    say(f"{standing(result, baselines)} (unigram always guesses {unigram['token']!r}); perplexity "
        f"{result['eval_ppl']:.1f} vs unigram {unigram['perplexity']:.1f}; {max_steps:,} steps in "
        f"{result['wall_s']:.0f} s")
    words = ", words.tsv" if (out / "final" / "words.tsv").is_file() else ""
    say(f"model written to {out / 'final'} (model.safetensors, config.json, vocab.txt; bigram_counts.npz, "
        f"heldout_examples.txt{words} for `python -m minibert.explain fill_mask`)")
    if cfg.export_hf:
        say(f"Hugging Face copy written to {out / 'final_hf'} (loads in transformers' AutoModelForMaskedLM)")
    return result

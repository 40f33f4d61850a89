"""CLI: `python -m minibert.explain CONCEPT [--out DIR] [--checkpoint PATH] [--layer L --head H]`, `... list`, or
`... all`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from . import CONCEPTS, DemoContext, find, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minibert.explain",
                                     description="Run a small CPU demo of one concept of the course.")
    parser.add_argument("concept", help="a concept name, `list` to show them all, or `all` to run every demo")
    parser.add_argument("--out", type=Path, default=Path("runs") / "explain", help="folder for PNG files")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights for attention_heatmap (minibert/HF folder or TF checkpoint prefix); for fill_mask the "
                             "final/ folder of a pretraining run (default runs/pretrain/final)")
    parser.add_argument("--layer", type=int, default=None, help="attention_heatmap: the layer to draw (from 0)")
    parser.add_argument("--head", type=int, default=None, help="attention_heatmap: the head to draw (from 0)")
    args = parser.parse_args(argv)
    concept = args.concept.lower()  # `LIST`, `Warmup`: the names are lower-case, so accept any case
    try:
        if concept == "list":
            width = max(len(c.name) for c in CONCEPTS)
            for c in CONCEPTS:
                print(f"{c.name:<{width}}  {c.title}")
            return 0
        names = [c.name for c in CONCEPTS] if concept == "all" else [find(concept).name]  # a typo fails here
        # The demo models are tiny: one thread avoids thread hand-off costs that dominate at this size.
        torch.set_num_threads(1)
        ctx = DemoContext(out_dir=args.out, checkpoint=args.checkpoint, layer=args.layer, head=args.head)
        for name in names:
            run(name, ctx)
    except ValueError as e:  # a user error (unknown concept, missing checkpoint): one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())

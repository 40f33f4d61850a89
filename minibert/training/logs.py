"""Metric logs (one JSON object a line) and the curves drawn from them.

A JSONL file survives a crash line by line, can be appended to after --resume, and is easy to load elsewhere
(`pandas.read_json(path, lines=True)`). Plots are PNGs, because a curve shows divergence or overfitting
(dev loss rising while train loss falls) at a glance where a table of numbers does not.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from .io import atomic_write_bytes


class MetricsLog:
    """metrics.jsonl: one JSON record per line, appended and flushed as the run goes (a crash loses nothing)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(jsonl_path: str | os.PathLike, png_path: str | os.PathLike,
                series: dict[str, tuple[str, str]], title: str, ylabel: str = "loss",
                accuracy: dict[str, tuple[str, str]] | None = None, baselines: dict[str, float] | None = None,
                events: dict[str, float] | None = None) -> None:
    """Draw each series (label -> (x_key, y_key)) from the records that have both keys, and save a PNG: the 学习曲线
    learning curve.

    accuracy: series for a second panel on the right (y in [0, 1]); baselines: label -> value, drawn there as
    dashed horizontal lines (e.g. the bigram baseline a pretrained model should beat); events: label -> x, a
    vertical line on every panel (e.g. the step at which the model grew).
    """
    plt = pyplot()
    records = MetricsLog(jsonl_path).read()
    panels = [(series, ylabel)] + ([(accuracy, "accuracy (and other 0-1 measures)")] if accuracy else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4), dpi=120, squeeze=False)
    for ax, (curves, label_y) in zip(axes[0], panels):
        for label, (x_key, y_key) in curves.items():
            points = [(r[x_key], r[y_key]) for r in records if x_key in r and y_key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        ax.set_xlabel(next(iter(curves.values()))[0])
        ax.set_ylabel(label_y)
        ax.grid(alpha=0.3)
    if accuracy:
        for (label, value), style in zip((baselines or {}).items(), ("--", "-.", ":", (0, (1, 3)))):
            axes[0][1].axhline(value, color="gray", linestyle=style, label=f"{label} {value:.3f}")
        axes[0][1].set_ylim(min(0.0, axes[0][1].get_ylim()[0]), 1.02)
    for ax in axes[0]:
        for label, x in (events or {}).items():
            ax.axvline(x, color="black", linestyle=(0, (1, 2)), linewidth=1, label=label)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, png_path)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend: plots are written as PNGs, so no display is needed (a
    training machine over ssh has none). Imported here, not at the top: only the runs that plot pay for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png_path: str | os.PathLike) -> None:
    """Saves a matplotlib figure as a PNG and closes it, through the one atomic writer (io.py: temp file, fsync,
    rename), so a reader never sees half a PNG and two processes plotting into one folder never share a temp."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    atomic_write_bytes(png_path, buffer.getvalue())

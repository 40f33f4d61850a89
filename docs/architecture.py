"""Draw minibert's architecture with tensor shapes: `python docs/architecture.py` writes docs/architecture.png.

The shapes in the picture are not typed in by hand. The script runs a real forward pass of BERT-mini (H256, L4, A4,
I1024, with the Tianchi vocabulary size V=5981) on a batch of B=2 sequences of T=16 tokens, records every
module's output shape with forward hooks, and prints each one next to its symbolic form ([B,T,H] ...). If the
model changes, the picture changes with it.

Dimension legend: B batch, T sequence length, H hidden size, N heads, D head size = H/N, I FFN size,
V vocabulary size, P max positions, M masked positions, C labels / entity types.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from minibert import BertConfig, BertForMaskedLM  # noqa: E402
from minibert import IGNORE_INDEX  # noqa: E402
from minibert.training.io import atomic_write_bytes  # noqa: E402

B, T = 2, 16


def measure_shapes() -> tuple[BertConfig, dict[str, tuple]]:
    """Run BERT-mini once and return the output shape of each module we draw."""
    torch.manual_seed(0)
    config = BertConfig.mini(vocab_size=5981)
    model = BertForMaskedLM(config).eval()
    layer = model.bert.encoder.layers[0]
    watched = {"embeddings": model.bert.embeddings, "qkv": layer.attention.qkv, "attention": layer.attention,
               "attention_norm": layer.attention_norm, "ffn.up": layer.ffn.up, "ffn.down": layer.ffn.down,
               "ffn_norm": layer.ffn_norm, "mlm_head.dense": model.mlm_head.dense}
    shapes: dict[str, tuple] = {}
    hooks = [module.register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple((out[0] if isinstance(out, tuple) else out).shape)))
        for name, module in watched.items()]
    ids = torch.randint(5, config.vocab_size, (B, T))  # [B,T]
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 3] = ids[:, 3]
    labels[0, 7] = ids[0, 7]  # M = 3 masked positions
    with torch.no_grad():
        probs = model.bert(ids, output_attentions=True).attentions[0]  # [B,N,T,T]
        out = model(ids, labels=labels)
    for hook in hooks:
        hook.remove()
    shapes["probs"] = tuple(probs.shape)
    shapes["mlm_logits"] = tuple(out.logits.shape)
    shapes["input_ids"] = tuple(ids.shape)
    return config, shapes


def fmt(symbolic: str, shape: tuple) -> str:
    return f"{symbolic} = {list(shape)}"


def box(ax, x, y, w, h, text, color, fontsize=8.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", fc=color, ec="#333",
                                lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, x0, y0, x1, y1, text="", color="#333"):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10, lw=0.9, color=color))
    if text:
        ax.text((x0 + x1) / 2 + 0.12, (y0 + y1) / 2, text, fontsize=7.5, va="center", color="#1f4e9c")


def draw(config: BertConfig, s: dict[str, tuple], path: Path) -> None:
    H, N, D, I, L, V = (config.hidden_size, config.num_attention_heads, config.head_size, config.intermediate_size,
                        config.num_hidden_layers, config.vocab_size)
    fig, ax = plt.subplots(figsize=(13, 11), dpi=110)
    ax.set_xlim(0, 13)
    ax.set_ylim(0, 11)
    ax.axis("off")
    ax.set_title(f"minibert = BERT (post-LN). Shapes measured on BERT-mini: B={B} T={T} H={H} N={N} D={D} I={I} "
                 f"L={L} V={V}", fontsize=11)

    # ---- left column: the whole model, bottom to top ----
    x, w = 0.4, 5.2
    box(ax, x, 0.3, w, 0.7, f"input_ids, token_type_ids, attention_mask  {fmt('[B,T]', s['input_ids'])}\n"
                            "from tokenizers/; checked by input_checks.py:check_inputs", "#eeeeee")
    arrow(ax, x + w / 2, 1.0, x + w / 2, 1.4)
    box(ax, x, 1.4, w, 1.2, "BertEmbeddings (model.py)\nword [V,H] + position [P,H] + segment [2,H]\n"
                            f"→ LayerNorm → dropout   {fmt('[B,T,H]', s['embeddings'])}", "#d9ead3")
    arrow(ax, x + w / 2, 2.6, x + w / 2, 3.0)
    ax.add_patch(FancyBboxPatch((x - 0.15, 2.95), w + 0.3, 3.3, boxstyle="round,pad=0.02", fc="none", ec="#777",
                                ls="--"))
    ax.text(x + w + 0.2, 4.6, f"× L = {L}", fontsize=11, rotation=90, va="center")
    box(ax, x, 3.1, w, 1.3, "TransformerBlock (layers.py), part 1\nmulti-head self-attention\n"
                            f"x = LN(x + Dropout(Attention(x, mask)))   {fmt('[B,T,H]', s['attention_norm'])}",
        "#cfe2f3")
    arrow(ax, x + w / 2, 4.4, x + w / 2, 4.8)
    box(ax, x, 4.8, w, 1.3, "TransformerBlock, part 2: feed-forward\n"
                            f"x = LN(x + Dropout(FFN(x)))   {fmt('[B,T,H]', s['ffn_norm'])}", "#cfe2f3")
    arrow(ax, x + w / 2, 6.25, x + w / 2, 6.7, "last_hidden_state [B,T,H]")
    # heads
    heads = [("pooler: tanh(W h[CLS] + b)\n[B,H] (model.py:BertPooler)", "#fff2cc"),
             (f"MLM head, sparse: gather M rows\n→ dense+GELU+LN → ·Eᵀ + b\n{fmt('[M,V]', s['mlm_logits'])}",
              "#fce5cd"),
             ("classifier on [CLS]/pooler/mean\n[B,C] (heads.py)", "#fff2cc"),
             ("GlobalPointer: spans\n[B,C,T,T] (globalpointer.py)", "#fff2cc")]
    for k, (text, color) in enumerate(heads):
        hx = 0.1 + k % 2 * 2.85
        hy = 6.8 + k // 2 * 1.3
        box(ax, hx, hy, 2.7, 1.1, text, color, fontsize=7.5)
    ax.text(x, 9.6, "The decoder of the MLM head IS the word-embedding matrix E [V,H] (tied): no separate\n"
                    "parameter. Only the M labelled positions (labels ≠ -100) are projected (sparse MLM).",
            fontsize=8, color="#7f3f00")

    # ---- right column: inside one block ----
    x, w = 7.0, 5.6
    ax.text(x, 10.55, "Inside one TransformerBlock (layers.py), top to bottom = data flow", fontsize=10,
            weight="bold")
    steps = [
        (f"x {fmt('[B,T,H]', s['embeddings'])}", "#eeeeee"),
        (f"qkv = Linear(H → 3H) (fused Q,K,V)   {fmt('[B,T,3H]', s['qkv'])}", "#cfe2f3"),
        (f"view + permute → q, k, v each [B,N,T,D] = [{B}, {N}, {T}, {D}]", "#cfe2f3"),
        (f"scores = q·kᵀ / √D, padded keys → finfo.min\nsoftmax over keys → probs {fmt('[B,N,T,T]', s['probs'])}",
         "#cfe2f3"),
        (f"context = probs · v → [B,N,T,D] → concat heads [B,T,H]\nout = Linear(H → H)   "
         f"{fmt('[B,T,H]', s['attention'])}", "#cfe2f3"),
        (f"x = attention_norm(x + dropout(out))   {fmt('[B,T,H]', s['attention_norm'])}", "#d0e0e3"),
        (f"up = Linear(H → I), GELU   {fmt('[B,T,I]', s['ffn.up'])}", "#d9d2e9"),
        (f"down = Linear(I → H)   {fmt('[B,T,H]', s['ffn.down'])}", "#d9d2e9"),
        (f"x = ffn_norm(x + dropout(down))   {fmt('[B,T,H]', s['ffn_norm'])}", "#d0e0e3"),
    ]
    top, height, gap = 9.7, 0.78, 0.28
    for k, (text, color) in enumerate(steps):
        y = top - k * (height + gap)
        box(ax, x, y, w, height, text, color, fontsize=8)
        if k:
            arrow(ax, x + w / 2, y + height + gap, x + w / 2, y + height)
    ax.text(x, 0.35, "attention_mask [B,T] → key mask [B,1,1,T]: broadcast over heads and queries.\n"
                     "Post-LN (BERT): LayerNorm AFTER each residual add; pre-LN would be x + F(LN(x)).",
            fontsize=8, color="#444")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())  # a reader never sees half a PNG


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "architecture.png")
    args = parser.parse_args(argv)
    config, shapes = measure_shapes()
    draw(config, shapes, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

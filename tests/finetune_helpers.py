"""Small labelled files and a tiny-model command line shared by the fine-tuning comparison tests."""

from conftest import tiny_config


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

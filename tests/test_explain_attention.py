"""`python -m minibert.explain attention_heatmap`: which checkpoint it reads, and how it fails. (Its demo test, which
checks the picture and the head it picks, is test_attention_heatmap_demo in test_explain.py.)"""

from __future__ import annotations

import pytest

from minibert.explain import DemoContext, run
from minibert.explain.__main__ import main
from minibert.model import BertModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def test_attention_heatmap_without_any_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    import minibert.explain.attention_map as attention_map

    monkeypatch.chdir(tmp_path)  # no runs/pretrain/final here
    monkeypatch.setattr(attention_map, "minilm_folder", lambda: None)
    r = run("attention_heatmap", DemoContext(out_dir=tmp_path))
    assert r["source"] == "random init" and "NOTICE" in capsys.readouterr().out


def test_attention_heatmap_layer_head_and_all_heads_grid(tmp_path, capsys):
    from minibert.explain.common import minilm_folder

    r = run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=minilm_folder(), layer=1, head=3))
    assert (r["layer"], r["head"]) == (1, 3) and "chosen with --layer/--head" in capsys.readouterr().out
    assert r["grid_png"].stat().st_size > r["png"].stat().st_size  # every layer x head in one picture
    with pytest.raises(ValueError, match=r"--layer 99 --head 0: this model has layers 0-\d+"):
        run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=minilm_folder(), layer=99))
    assert main(["attention_heatmap", "--layer", "99", "--out", str(tmp_path)]) == 2  # one line, no traceback


def test_attention_heatmap_reads_an_id_encoder_on_a_row_of_its_own_ids(tmp_path):
    # Its run's first held-out row, not the embedded generator's sentence, whose IDs its vocab reads as [UNK].
    from conftest import tiny_config

    from minibert.checkpoint import save_pretrained

    ids = [str(9000 + i) for i in range(40)]  # none of them is an ID of the embedded corpus (vocab 2,566)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ids]) + "\n")
    folder = save_pretrained(BertModel(tiny_config(vocab_size=45), add_pooling_layer=False), tmp_path / "own-ids",
                             vocab=tmp_path / "vocab.txt")
    (folder / "heldout_examples.txt").write_text(" ".join(ids[3:23]) + "\n" + " ".join(ids[:5]) + "\n")
    r = run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=folder))
    assert r["tokens"] == ["[CLS]", *ids[3:19], "[SEP]"]  # the first row, cut at 16 tokens, none of them [UNK]


def test_attention_heatmap_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=tmp_path / "absent"))


def test_attention_heatmap_reads_a_tf_prefix_and_refuses_a_folder_without_vocab(tmp_path):
    import shutil
    from pathlib import Path

    from minibert.checkpoint import CheckpointError

    tf_tiny = Path(__file__).resolve().parent / "fixtures" / "tf_tiny"
    r = run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=tf_tiny / "bert_model.ckpt"))
    assert r["row_sums_ok"] and "bert_model.ckpt" in r["source"]
    folder = tmp_path / "no_vocab"
    shutil.copytree(tf_tiny, folder, ignore=shutil.ignore_patterns("vocab.txt"))
    with pytest.raises(CheckpointError, match="no vocab.txt or tokenizer.json next to"):
        run("attention_heatmap", DemoContext(out_dir=tmp_path, checkpoint=folder))

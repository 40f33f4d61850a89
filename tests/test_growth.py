"""Growing the model (pretrain/growth.py) and the init tricks (pretrain/warm_start.py)."""
import dataclasses
import json

import pytest
import torch

from minibert import BertConfig, BertForMaskedLM
from pretrain.config import PretrainConfig
from pretrain.growth import (GROWTH_NOISE, carry_adam_state, grow, grown_row_length, grown_stage_groups,
                            last_small_step, small_config)
from pretrain.warm_start import init_local_attention, init_sinusoidal_positions

from conftest import pretrain_args


def test_widening_is_exact_and_stacking_reaches_the_target_shape():
    target = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    small = small_config(target, 1, 1)
    assert (small.hidden_size, small.num_attention_heads, small.intermediate_size, small.num_hidden_layers) == \
        (128, 2, 512, 1)
    torch.manual_seed(0)
    model = BertForMaskedLM(small).eval()
    for parameter in model.parameters():  # non-trivial weights everywhere, biases and LayerNorms included
        parameter.data.add_(torch.randn_like(parameter) * 0.05)
    ids = torch.randint(5, 60, (2, 12))
    wide_config = small.apply_overrides(["hidden_size=256", "intermediate_size=1024", "num_attention_heads=4"])
    wide = grow(model, wide_config, noise=GROWTH_NOISE, seed=0).eval()
    torch.testing.assert_close(wide(ids, labels=ids).logits, model(ids, labels=ids).logits, atol=1e-4, rtol=1e-4)
    up = wide.bert.encoder.layers[0].ffn.up.weight                   # [2I, 2H]: the two copies of each input unit
    assert (up[:, :128] - up[:, 128:]).abs().mean() > GROWTH_NOISE  # get different outgoing weights (an uneven split)
    grown = grow(model, target, noise=GROWTH_NOISE, seed=0)
    assert grown.config.num_hidden_layers == 4 and grown.config.hidden_size == 256


def test_the_uneven_split_lets_a_unit_and_its_copy_learn_different_things():
    """With an even split (noise 0) the two halves of the hidden state get identical gradients; with the split
    they do not, so training can use all H dimensions instead of H/2 twice."""
    target = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    torch.manual_seed(0)
    small = BertForMaskedLM(small_config(target, 1, 1))
    ids = torch.randint(5, 60, (2, 12))
    wide_config = small.config.apply_overrides(["hidden_size=256", "intermediate_size=1024", "num_attention_heads=4"])
    for noise, symmetric in ((0.0, True), (GROWTH_NOISE, False)):
        wide = grow(small, wide_config, noise=noise, seed=0)
        wide(ids, labels=ids).loss.backward()
        grad = wide.bert.embeddings.word_embeddings.weight.grad       # [V, 2·128]
        halves_equal = torch.allclose(grad[:, :128], grad[:, 128:], atol=1e-7)
        assert halves_equal == symmetric, noise


def test_local_attention_heads_look_at_their_neighbours():
    config = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    init_sinusoidal_positions(model, 0.1)
    init_local_attention(model, (-1, 1, -2, 2), 2.0)
    ids = torch.randint(5, 60, (4, 32))
    attention = model.bert(ids, output_attentions=True).attentions[0]  # [B,N,T,T]
    for head, offset in enumerate((-1, 1, -2, 2)):
        rows = torch.arange(max(0, -offset), 32 - max(0, offset))
        assert attention[:, head, rows, rows + offset].mean() > 0.6, (head, offset)  # uniform would be 1/32


def test_a_growing_run_exports_the_full_shape(tmp_path):
    tiny = ["--max-steps", "6", "--batch-size", "4", "--max-len", "32", "--eval-every", "3", "--eval-sequences",
            "8", "--log-every", "1", "--set", "hidden_size=64", "--set", "num_attention_heads=2", "--set",
            "intermediate_size=128", "--set", "num_hidden_layers=2", "--num-threads", "1", "--growth-fraction", "0.5"]
    from pretrain.__main__ import main
    assert main(pretrain_args(tmp_path, "run", tiny, 0)) == 0
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2)


def test_the_small_stage_is_a_fraction_of_the_run_up_to_its_cap(tmp_path):
    assert last_small_step(1000, 0.95, 8000) == 950 and last_small_step(20000, 0.95, 8000) == 8000
    assert last_small_step(20000, 0.95, 0) == 19000 and last_small_step(10, 0.99, 0) == 9  # one grown step at least
    assert last_small_step(100, 0.876, 0) == 88  # 87.6 rounded, not cut to 87
    tiny = ["--max-steps", "8", "--batch-size", "4", "--max-len", "32", "--eval-every", "100", "--eval-sequences",
            "8", "--log-every", "1", "--set", "hidden_size=64", "--set", "num_attention_heads=2", "--set",
            "intermediate_size=128", "--set", "num_hidden_layers=2", "--num-threads", "1",
            "--growth-max-small-steps", "3", "--lr", "3e-4"]
    from pretrain.__main__ import main
    assert main(pretrain_args(tmp_path, "run", tiny, 0)) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if "grew_to" in r] == [{"step": 3, "grew_to": "H64 L2"}]  # loss_curve.png marks it
    lrs = [r["lr"] for r in records if "lr" in r]  # growth_lr 3e-3 decays over 3 small steps, then --lr 3e-4 over 5
    assert len(lrs) == 8 and lrs[:3] == sorted(lrs[:3], reverse=True) and lrs[0] == 3e-3 and lrs[3] == 3e-4, lrs
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["hidden_size"] == 64


def test_freed_copies_attend_uniformly_and_the_grown_model_computes_the_same_function():
    target = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    torch.manual_seed(0)
    small = BertForMaskedLM(small_config(target, 1, 1)).eval()
    init_sinusoidal_positions(small, 0.1)
    init_local_attention(small, (-1, 1), 2.0)
    ids = torch.randint(5, 60, (2, 16))
    wide_config = small.config.apply_overrides(["hidden_size=256", "intermediate_size=1024", "num_attention_heads=4"])
    wide = grow(small, wide_config, noise=GROWTH_NOISE, seed=0, free_copies=True).eval()
    torch.testing.assert_close(wide(ids, labels=ids).logits, small(ids, labels=ids).logits, atol=1e-4, rtol=1e-4)
    before = small.bert(ids, output_attentions=True).attentions[0]                       # [B,2,T,T]
    grown = grow(small, target, noise=GROWTH_NOISE, seed=0, free_copies=True)
    for layer in grown.bert(ids, output_attentions=True).attentions:                     # [B,4,T,T] each
        torch.testing.assert_close(layer[:, 2:], torch.full_like(layer[:, 2:], 1 / 16))  # the copies: uniform
    torch.testing.assert_close(grown.bert(ids, output_attentions=True).attentions[0][:, :2], before)


def test_identity_stacking_keeps_the_function_far_better_than_copying():
    """A copied post-LN layer changes what the model computes; a near-identity one (output maps zeroed, its
    LayerNorms set to the layer below's output LayerNorm) nearly keeps it, so growing costs less accuracy."""
    target = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    torch.manual_seed(0)
    small = BertForMaskedLM(small_config(target, 1, 1)).eval()
    for parameter in small.parameters():  # non-trivial weights everywhere, LayerNorm γ ≈ 1 ± 0.05, β ≈ ±0.05
        parameter.data.add_(torch.randn_like(parameter) * 0.05)
    ids = torch.randint(5, 60, (2, 12))
    reference = small(ids, labels=ids).logits                                     # [B,T,V]

    def relative_error(identity_stack: bool) -> float:
        grown = grow(small, target, noise=GROWTH_NOISE, seed=0, identity_stack=identity_stack).eval()
        return ((grown(ids, labels=ids).logits - reference).norm() / reference.norm()).item()

    copied, identity = relative_error(False), relative_error(True)
    assert identity < 0.02 and copied > 0.2, (identity, copied)
    grown = grow(small, target, noise=GROWTH_NOISE, seed=0, identity_stack=True)
    assert not grown.bert.encoder.layers[3].ffn.down.weight.any()              # the new layers' output maps start at 0


def test_growing_carries_adams_moments_so_trained_weights_are_not_jolted():
    """carry_adam_state tiles the small model's AdamW moments onto the grown weights (new layers stay fresh), so
    the first step after growing moves a trained weight by less than a fresh AdamW's ±LR."""
    target = BertConfig.mini(60).apply_overrides(["hidden_dropout_prob=0.0", "attention_probs_dropout_prob=0.0"])
    torch.manual_seed(0)
    small = BertForMaskedLM(small_config(target, 1, 1))
    small_optimizer = torch.optim.AdamW(small.parameters(), lr=1e-3)
    for _ in range(20):  # a fresh batch per step: noisy gradients, so |m|/√v settles below 1
        ids = torch.randint(5, 60, (4, 12))
        small(ids, labels=ids).loss.backward()
        small_optimizer.step()
        small_optimizer.zero_grad()
    ids = torch.randint(5, 60, (4, 12))
    moved = {}
    for carry in (False, True):
        grown = grow(small, target, noise=GROWTH_NOISE, seed=0, free_copies=True, identity_stack=True)
        optimizer = torch.optim.AdamW(grown.parameters(), lr=1e-3, weight_decay=0.0)
        if carry:
            assert carry_adam_state(small, small_optimizer, grown, optimizer, free_copies=True) == \
                len(list(small.parameters()))
            qkv = grown.bert.encoder.layers[0].attention.qkv.weight
            assert optimizer.state[qkv]["exp_avg"].shape == qkv.shape
            assert optimizer.state[qkv]["exp_avg_sq"][128:256].abs().sum() == 0  # the freed copies' Q rows
            out = grown.bert.encoder.layers[0].attention.out.weight
            assert optimizer.state[out]["exp_avg_sq"][:, 128:].abs().sum() == 0  # ... and their output columns
            assert optimizer.state[out]["exp_avg_sq"][:, :128].abs().sum() > 0  # the originals' are carried
            assert grown.bert.encoder.layers[1].ffn.up.weight not in optimizer.state  # stacked layers: fresh
        before = grown.bert.embeddings.word_embeddings.weight.detach().clone()
        grown(ids, labels=ids).loss.backward()
        optimizer.step()
        moved[carry] = (grown.bert.embeddings.word_embeddings.weight.detach() - before).abs().mean().item()
    assert moved[False] > 1.5 * moved[True], moved  # fresh: ±LR on every entry with a gradient


def test_only_a_long_grown_stage_reads_longer_rows_and_says_why_it_cannot():
    cfg = PretrainConfig()  # rows of 64, then 128 for a grown stage of 2,000 steps or more
    assert grown_row_length(cfg, 1999, 512, 1) == (64, "")  # every 10-minute run on 2 CPU cores: 183-610 steps
    assert grown_row_length(cfg, 2000, 512, 1) == (128, "")
    assert grown_row_length(cfg, 9000, 512, 16) == (128, "")  # 16 rows of 128 split into 16 processes
    assert grown_row_length(dataclasses.replace(cfg, grown_max_len=64), 9000, 512, 1) == (64, "")  # = --max-len: off, quietly
    length, why = grown_row_length(cfg, 9000, 512, 32)  # 16 rows cannot split into 32 processes x micro-batches
    assert length == 64 and "split evenly into 32" in why
    length, why = grown_row_length(cfg, 9000, 100, 1)
    assert length == 64 and "max_position_embeddings 100" in why
    assert grown_row_length(cfg, 9000, 128, 1) == (128, "")  # rows of exactly max_position_embeddings fit


def test_a_short_grown_stage_spares_the_small_models_weights_and_a_long_one_trains_all_at_lr():
    cfg = PretrainConfig()  # lr 1e-3, carried weights at 0.1 x lr below 2,000 grown steps
    small = BertForMaskedLM(small_config(BertConfig.mini(60), 1, 1))
    grown = grow(small, BertConfig.mini(60), noise=GROWTH_NOISE, seed=0)

    def lr_of(groups):  # parameter name -> its group's peak LR
        return {name: group["lr"] for group in groups for name in group["param_names"]}

    short, long = lr_of(grown_stage_groups(grown, cfg, 240)), lr_of(grown_stage_groups(grown, cfg, 2000))
    assert set(short) == {name for name, _ in grown.named_parameters()}  # every weight in exactly one group
    for name in ("bert.encoder.layers.1.ffn.up.weight", "bert.encoder.layers.3.attention_norm.bias"):  # stacked
        assert short[name] == long[name] == cfg.lr
    for name in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layers.0.ffn.up.weight", "mlm_head.bias"):
        assert short[name] == pytest.approx(cfg.lr * cfg.growth_carried_lr_scale) and long[name] == cfg.lr
    # the same groups either way (only their LRs differ): a resumed run loads its optimizer state into them
    assert [g["name"] for g in grown_stage_groups(grown, cfg, 240)] == \
        [g["name"] for g in grown_stage_groups(grown, cfg, 9000)]


def test_the_unigram_counts_behind_the_decoder_bias_cover_every_training_document(tmp_path):
    from pretrain.data import prepare_corpus
    from pretrain.warm_start import train_token_counts

    path = tmp_path / "c.tsv"
    path.write_text("label\ttext\n0\t11 12 11\n0\t12 13\n0\t11 14\n")
    corpus = prepare_corpus(path, cache_dir=tmp_path / "cache", log=lambda message: None)
    ids = {token: index for index, token in enumerate(corpus.tokenizer.tokens)}
    counts = train_token_counts(corpus, [0, 1])  # document 2 is held out: its 11 and 14 are not counted
    assert [counts[ids[t]] for t in ("11", "12", "13", "14")] == [2, 2, 1, 0] and counts.sum() == 5

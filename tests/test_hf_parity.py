"""Parity with Hugging Face `transformers` (a test-only reference): build a random HF BERT, copy its weights into
minibert, and demand the same numbers (fp32, eval mode, max abs diff ≤ 1e-5).

The weight copy here is a deliberately small TEST helper (a name table plus the Q/K/V concatenation); the real,
checked converter lives in minibert/checkpoint/ and is tested on its own, so a bug there cannot hide one here.
"""

from __future__ import annotations

import pytest
import torch

import minibert

transformers = pytest.importorskip(
    "transformers", reason="transformers (the parity reference) is a test extra; make test installs it")

TOLERANCE = 1e-5

# minibert name <- HF name, for one encoder layer ({i} is the layer index). Q, K, V are handled separately:
# minibert fuses them into one [3H,H] `attention.qkv` (Q rows, then K, then V).
LAYER_TABLE = {
    "attention.out.weight": "attention.output.dense.weight",
    "attention.out.bias": "attention.output.dense.bias",
    "attention_norm.weight": "attention.output.LayerNorm.weight",
    "attention_norm.bias": "attention.output.LayerNorm.bias",
    "ffn.up.weight": "intermediate.dense.weight",
    "ffn.up.bias": "intermediate.dense.bias",
    "ffn.down.weight": "output.dense.weight",
    "ffn.down.bias": "output.dense.bias",
    "ffn_norm.weight": "output.LayerNorm.weight",
    "ffn_norm.bias": "output.LayerNorm.bias",
}
EMBEDDING_TABLE = {
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.layer_norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.layer_norm.bias": "embeddings.LayerNorm.bias",
}
POOLER_TABLE = {"pooler.dense.weight": "pooler.dense.weight", "pooler.dense.bias": "pooler.dense.bias"}
MLM_TABLE = {  # the decoder weight is tied to the word embeddings on both sides: nothing to copy
    "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
    "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
    "mlm_head.layer_norm.weight": "cls.predictions.transform.LayerNorm.weight",
    "mlm_head.layer_norm.bias": "cls.predictions.transform.LayerNorm.bias",
    "mlm_head.bias": "cls.predictions.bias",
}


def hf_to_minibert_state(hf_state: dict, num_layers: int, prefix: str = "") -> dict:
    """Rename an HF BertModel state dict (keys optionally under `prefix`, e.g. "bert.") to minibert's names."""
    table = dict(EMBEDDING_TABLE)
    if prefix + "pooler.dense.weight" in hf_state:
        table.update(POOLER_TABLE)
    for i in range(num_layers):
        table.update({f"encoder.layers.{i}.{mine}": f"encoder.layer.{i}.{theirs}"
                      for mine, theirs in LAYER_TABLE.items()})
    ours = {prefix + mine: hf_state[prefix + theirs] for mine, theirs in table.items()}
    for i in range(num_layers):
        hf = f"{prefix}encoder.layer.{i}.attention.self."
        for kind in ("weight", "bias"):
            ours[f"{prefix}encoder.layers.{i}.attention.qkv.{kind}"] = torch.cat(
                [hf_state[f"{hf}query.{kind}"], hf_state[f"{hf}key.{kind}"], hf_state[f"{hf}value.{kind}"]], dim=0)
    return ours


def perturb_(model: torch.nn.Module, scale: float = 0.05) -> None:
    """HF's init leaves biases at 0 and LayerNorm at (1, 0), so a swapped bias or gamma would go unnoticed.
    Add noise to EVERY parameter so each one must land in the right place for parity to hold."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))


def hf_config(attn: str, **kw):
    values = dict(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=40, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0)
    values.update(kw)
    return transformers.BertConfig(attn_implementation=attn, **values)


def ours_config(hf_cfg) -> minibert.BertConfig:
    return minibert.BertConfig.from_dict(hf_cfg.to_dict())  # also exercises reading an HF config


def batch(cfg, pair: bool, B: int = 4, T: int = 13):
    """Random IDs with varied lengths per row (one row unpadded, one of length 1), [PAD]=0 after the end;
    with `pair`, segment B (token type 1) starts at a different place in each row."""
    lengths = torch.tensor([T, 9, 4, 1])[:B]
    attention_mask = (torch.arange(T)[None] < lengths[:, None]).long()  # [B,T]
    ids = torch.randint(1, cfg.vocab_size, (B, T)) * attention_mask
    token_type_ids = None
    if pair:
        starts = (lengths // 2).clamp(min=1)
        token_type_ids = ((torch.arange(T)[None] >= starts[:, None]) & attention_mask.bool()).long()
        token_type_ids[0, -2:] = cfg.type_vocab_size - 1  # use the last type row too (type_vocab_size may be 3)
    return ids, token_type_ids, attention_mask


CONFIGS = {
    "gelu-L2-H32-N4": dict(),
    "gelu_new-L3-H48-N6-eps1e-6": dict(hidden_act="gelu_new", num_hidden_layers=3, hidden_size=48,
                                       num_attention_heads=6, intermediate_size=96, layer_norm_eps=1e-6),
    "relu-L1-H64-N2-types3": dict(hidden_act="relu", num_hidden_layers=1, hidden_size=64, num_attention_heads=2,
                                  intermediate_size=128, type_vocab_size=3, layer_norm_eps=1e-5),
    "gelu-H36-N3-eps1e-3": dict(hidden_size=36, num_attention_heads=3, intermediate_size=50, layer_norm_eps=1e-3,
                                vocab_size=257, max_position_embeddings=16),
}
ATTENTION = ["eager", "sdpa"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_bert_model_matches_transformers(name, attn, pair):
    cfg = hf_config(attn, **CONFIGS[name])
    hf = transformers.BertModel(cfg).eval()
    assert hf.config._attn_implementation == attn
    perturb_(hf)
    ours = minibert.BertModel(ours_config(cfg)).eval()
    ours.load_state_dict(hf_to_minibert_state(hf.state_dict(), cfg.num_hidden_layers), strict=True)
    ids, token_type_ids, attention_mask = batch(cfg, pair)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        fast = ours(ids, token_type_ids=token_type_ids, attention_mask=attention_mask)  # SDPA path
        reference = ours(ids, token_type_ids=token_type_ids, attention_mask=attention_mask, output_attentions=True)
    for got in (fast, reference):
        assert max_diff(got.last_hidden_state, expected.last_hidden_state) <= TOLERANCE
        assert max_diff(got.pooler_output, expected.pooler_output) <= TOLERANCE


@pytest.mark.parametrize("name", ["gelu-L2-H32-N4", "gelu_new-L3-H48-N6-eps1e-6"])
def test_hidden_states_and_attention_probabilities_match_transformers(name):
    cfg = hf_config("eager", **CONFIGS[name])  # eager: the only HF path that returns the probabilities
    hf = transformers.BertModel(cfg).eval()
    perturb_(hf)
    ours = minibert.BertModel(ours_config(cfg)).eval()
    ours.load_state_dict(hf_to_minibert_state(hf.state_dict(), cfg.num_hidden_layers))
    ids, token_type_ids, attention_mask = batch(cfg, pair=True)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=token_type_ids, attention_mask=attention_mask,
                      output_hidden_states=True, output_attentions=True)
        got = ours(ids, token_type_ids, attention_mask, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(expected.hidden_states) == cfg.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, expected.hidden_states):
        assert max_diff(a, b) <= TOLERANCE
    assert len(got.attentions) == len(expected.attentions) == cfg.num_hidden_layers
    for a, b in zip(got.attentions, expected.attentions):
        assert max_diff(a, b) <= TOLERANCE


def load_masked_lm(cfg):
    hf = transformers.BertForMaskedLM(cfg).eval()
    # HF ties the decoder to the word embeddings too; if that ever changed, copying only the embeddings
    # would silently compare against a different decoder.
    assert hf.cls.predictions.decoder.weight is hf.bert.embeddings.word_embeddings.weight
    perturb_(hf)
    ours = minibert.BertForMaskedLM(ours_config(cfg)).eval()
    state = hf_to_minibert_state(hf.state_dict(), cfg.num_hidden_layers, prefix="bert.")
    state.update({mine: hf.state_dict()[theirs] for mine, theirs in MLM_TABLE.items()})
    ours.load_state_dict(state, strict=True)
    return hf, ours


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("name", CONFIGS)
def test_masked_lm_logits_and_loss_match_transformers(name, attn):
    cfg = hf_config(attn, **CONFIGS[name])
    hf, ours = load_masked_lm(cfg)
    ids, token_type_ids, attention_mask = batch(cfg, pair=True)
    chosen = (torch.rand(ids.shape) < 0.4) & attention_mask.bool()
    chosen[:, 0] = True  # every row, even the length-1 one, has a labelled position
    labels = torch.where(chosen, torch.randint(0, cfg.vocab_size, ids.shape), torch.full_like(ids, -100))
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=token_type_ids, attention_mask=attention_mask, labels=labels)
        full = ours(ids, token_type_ids, attention_mask)  # no labels: full [B,T,V] logits
        sparse = ours(ids, token_type_ids, attention_mask, labels=labels)
    assert max_diff(full.logits, expected.logits) <= TOLERANCE
    assert max_diff(sparse.logits, expected.logits[chosen]) <= TOLERANCE
    assert abs(sparse.loss.item() - expected.loss.item()) <= TOLERANCE
    assert sparse.num_predictions == int(chosen.sum())


def test_the_copy_helper_is_not_vacuous():
    # Without the copied weights the outputs must differ: parity above is earned, not an artefact of init.
    cfg = hf_config("eager")
    hf = transformers.BertModel(cfg).eval()
    perturb_(hf)
    ours = minibert.BertModel(ours_config(cfg)).eval()
    ids, token_type_ids, attention_mask = batch(cfg, pair=True)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=token_type_ids, attention_mask=attention_mask).last_hidden_state
        before = max_diff(ours(ids, token_type_ids, attention_mask).last_hidden_state, expected)
        state = hf_to_minibert_state(hf.state_dict(), cfg.num_hidden_layers)
        qkv = "encoder.layers.0.attention.qkv.weight"  # [3H,H]
        H = cfg.hidden_size
        swapped = dict(state, **{qkv: torch.cat([state[qkv][H:2 * H], state[qkv][:H], state[qkv][2 * H:]])})  # K,Q,V
        ours.load_state_dict(swapped)
        wrong_order = max_diff(ours(ids, token_type_ids, attention_mask).last_hidden_state, expected)
    assert before > 1e-2
    assert wrong_order > 1e-3  # Q and K swapped transposes every score matrix: the fused order matters

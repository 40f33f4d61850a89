"""Growing the model during pretraining: train a narrow 1-layer BERT first, then widen it and stack it into the
exported shape (BERT-mini H256 L4 A4 I1024), so the export stays a standard post-LN BERT.

Why: a small model leaves the MLM "unigram plateau" after far fewer steps than BERT-mini, and its steps are ~5×
cheaper on a CPU (docs/pretrain.md has the measurements). Growing then keeps what it learned:

* widen (Net2Net, Chen et al. 2016, here by exact duplication): every hidden unit, FFN unit and attention head is
  copied once. With x' = [x, x], a linear map [[W, W], [W, W]] / 2 gives [Wx, Wx], a LayerNorm over [x, x] equals
  [LN(x), LN(x)], and the copied heads attend exactly like their originals, so the wide model computes the SAME
  function (tests/test_growth.py checks the logits). The tied decoder would double the logits; the MLM head's
  last LayerNorm is scaled by 1/2 and the embeddings by 1/√2 to keep them. A little noise breaks the symmetry
  (identical copies would otherwise get identical gradients forever).
* stack (progressive stacking, Gong et al. 2019): the L-layer encoder is copied onto layers L..kL-1; not exact
  in a post-LN BERT, but the copies start from useful attention instead of from scratch.
* free the copies (on by default): a copied head would attend exactly like its original, and the originals are
  local, so the copies start with uniform attention instead, still without changing the function
  (free_copied_heads).

Dimension legend: H hidden size, I intermediate size, L layers, V vocab, P positions.
"""

from __future__ import annotations

import math

import torch

from minibert import BertConfig, BertForMaskedLM

GROWTH_NOISE = 1e-3  # std added to the grown weight matrices, so that the copies can drift apart


def _widen_linear(weight: torch.Tensor) -> torch.Tensor:
    """[out, in] -> [2·out, 2·in] = [[W, W], [W, W]] / 2: maps [x, x] to [Wx, Wx]."""
    return weight.repeat(2, 2) / 2


def widen_state(state: dict, hidden_size: int) -> dict:
    """Doubles H, I and the number of heads (head size unchanged) of a BertForMaskedLM state dict, exactly."""
    wide = {}
    for name, value in state.items():
        if name.endswith("embeddings.weight"):                         # word [V,H], position [P,H], type [2,H]
            wide[name] = value.repeat(1, 2) / math.sqrt(2)
        elif name.endswith("attention.qkv.weight"):                    # Q, K, V blocks of [H,H] each
            wide[name] = torch.cat([_widen_linear(block) for block in value.split(hidden_size)])
        elif name.endswith("attention.qkv.bias"):
            wide[name] = torch.cat([block.repeat(2) for block in value.split(hidden_size)])
        elif name == "mlm_head.bias":                                  # [V]: over the vocabulary, unchanged
            wide[name] = value.clone()
        elif name.startswith("mlm_head.layer_norm."):                  # halves h, so h'·E' = h·E
            wide[name] = value.repeat(2) / math.sqrt(2)
        elif value.dim() == 2:                                         # every other Linear
            wide[name] = _widen_linear(value)
        else:                                                          # biases, LayerNorm gamma/beta
            wide[name] = value.repeat(2)
    return wide


def stack_state(state: dict, num_layers: int, factor: int) -> dict:
    """Copies encoder layers 0..L-1 onto L..factor·L-1 (progressive stacking)."""
    stacked = dict(state)
    prefix = "bert.encoder.layers."
    for name, value in state.items():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            for copy in range(1, factor):
                stacked[f"{prefix}{int(index) + copy * num_layers}.{rest}"] = value.clone()
    return stacked


def small_config(config: BertConfig, widen_times: int, num_layers: int) -> BertConfig:
    """The model to start from: H, I and heads halved `widen_times` times, `num_layers` layers."""
    shrink = 2 ** widen_times
    if config.hidden_size % shrink or config.num_attention_heads % shrink or config.num_hidden_layers % num_layers:
        raise ValueError(f"growth: cannot shrink H{config.hidden_size} A{config.num_attention_heads} "
                         f"L{config.num_hidden_layers} by {shrink} in width and to {num_layers} layer(s)")
    return config.apply_overrides([f"hidden_size={config.hidden_size // shrink}",
                                   f"intermediate_size={config.intermediate_size // shrink}",
                                   f"num_attention_heads={config.num_attention_heads // shrink}",
                                   f"num_hidden_layers={num_layers}"])


@torch.no_grad()
def free_copied_heads(state: dict, hidden_size: int, original_size: int) -> dict:
    """Turns the heads that widening copied into fresh, uniform-attention heads, without changing the function.

    Copies of a head attend exactly as their original does, and the original heads are local (layer 0's init points
    them at neighbours and stacking copies that layer), so a grown model has NO head that looks across the sequence,
    and 20% of the run is too short for one to form (measured: every head's attention entropy stayed ≤ 0.34 of ln T).
    Here a copy's query weights are zeroed, so it attends uniformly (the sequence's mean, what topic needs), and
    its columns of the output map are zeroed while the original's are doubled: [[W, W], [W, W]] / 2 becomes
    [[W, 0], [W, 0]], which maps [a, a'] to [Wa, Wa] for ANY a', so the grown model still computes the same function
    and the new heads come in through their gradient.
    """
    for name, value in state.items():
        if name.endswith("attention.qkv.weight") or name.endswith("attention.qkv.bias"):
            value[original_size:hidden_size] = 0.0                  # [3H(,H)]: Q rows of the copies (Q = rows 0..H-1)
        elif name.endswith("attention.out.weight"):                 # [H,H]: input columns = heads, copies last
            value[:, :original_size] *= 2
            value[:, original_size:] = 0.0
    return state


def grow(model: BertForMaskedLM, target: BertConfig, noise: float, seed: int,
         free_copies: bool = False) -> BertForMaskedLM:
    """A `target`-shaped BertForMaskedLM computing (nearly) what `model` computes: widened until H matches,
    then stacked until L matches; `noise` (std) is added to every weight matrix to break the copies' symmetry.
    With `free_copies`, the copied heads start with uniform attention instead (free_copied_heads)."""
    state = {name: value.detach().float().cpu() for name, value in model.state_dict().items()}
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    original = hidden
    while hidden < target.hidden_size:
        state, hidden = widen_state(state, hidden), hidden * 2
    if free_copies and hidden > original:
        state = free_copied_heads(state, hidden, original)
    if target.num_hidden_layers != layers:
        state = stack_state(state, layers, target.num_hidden_layers // layers)
    generator = torch.Generator().manual_seed(seed)
    for name, value in state.items():
        if value.dim() == 2 and noise > 0:
            value.add_(torch.randn(value.shape, generator=generator) * noise)
    grown = BertForMaskedLM(target)
    grown.load_state_dict(state)
    return grown.to(next(model.parameters()).device)


def saved_hidden_size(checkpoint_path) -> int | None:
    """H of the model in a training checkpoint (None if there is none): tells --resume whether the run had grown."""
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        return state["model"]["bert.embeddings.word_embeddings.weight"].shape[1]
    except Exception:  # missing or damaged: load_training_state says so in one line, naming the file
        return None

"""Growing the model during pretraining: train a narrow 1-layer BERT first, then widen it and stack it into the
exported shape (BERT-mini H256 L4 A4 I1024), so the export stays a standard post-LN BERT.

Why: a small model leaves the MLM "unigram plateau" after far fewer steps than BERT-mini, and its steps are ~5×
cheaper on a CPU (docs/pretrain_lab.md has the measurements). Growing then keeps what it learned:

* widen (Net2Net, Chen et al. 2016, here by exact duplication): every hidden unit, FFN unit and attention head is
  copied once. With x' = [x, x], a linear map [[A, B], [C, D]] gives [(A+B)x, (C+D)x], so any split with
  A + B = C + D = W gives [Wx, Wx]; a LayerNorm over [x, x] equals [LN(x), LN(x)], and the copied heads attend
  exactly like their originals, so the wide model computes the SAME function (tests/test_growth.py checks the
  logits). The tied decoder would double the logits; the MLM head's last LayerNorm and the embeddings are each
  scaled by 1/√2 to keep them: ([h, h]/√2)·([e, e]/√2) = h·e.
* break the symmetry, exactly: the split is W/2 ± noise, not W/2 and W/2. With an even split a unit and its copy
  get the same gradient forever (measured: after 1,000 BERT-mini steps the two halves of the embeddings still
  differed by 2%, so the 256-wide model was a 128-wide one twice, effective rank 60 of 256). Uneven outgoing
  weights give the copies different gradients from the first step, at no cost to the function.
* stack (progressive stacking, Gong et al. 2019): the L-layer encoder is copied onto layers L..kL-1; not exact
  in a post-LN BERT, but the copies start from useful attention instead of from scratch. Or (--growth-stack
  identity) the new layers start as near-identity maps, so the grown model computes almost what the small one did
  (stack_state says how a post-LN layer can be made one).
* free the copies (on by default): a copied head would attend exactly like its original, and the originals are
  local, so the copies start with uniform attention instead, still without changing the function
  (free_copied_heads).
* carry AdamW's moments (on by default): a fresh AdamW moves EVERY weight by about the LR on its first steps
  (m/√v = ±1 with one gradient), which knocked the trained weights out of their minimum: held-out accuracy fell
  0.29 -> 0.25 in 60 steps on SST-2, and the same jolt without growing (a fresh AdamW on the small model itself)
  cost 0.02. The small model's moments, tiled like its weights, keep the old weights' steps to the size they
  had (carry_adam_state).
* spare them in a short grown stage (差分学习率 differential learning rates, grown_stage_groups): the new layers
  learn at the full LR, the weights the small model trained at a tenth of it, unless the stage is long enough to
  win back what re-warming them costs.

Dimension legend: H hidden size, I intermediate size, L layers, V vocab, P positions.
"""

from __future__ import annotations

import math

import torch

from minibert import BertConfig, BertForMaskedLM
from minibert.training.optim import param_groups
from minibert.validation import ConfigError

GROWTH_NOISE = 0.02  # std of the uneven split W/2 ± noise: the scale of a fresh weight (BERT's init)
SMALL_LAYERS = 1     # the small model's layers (small_config(config, 1, SMALL_LAYERS)); stacking adds the rest


def _widen_linear(weight: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """[out, in] -> [2·out, 2·in] = [[W/2 + N, W/2 - N], [W/2 + M, W/2 - M]]: maps [x, x] to [Wx, Wx] for any
    noise N, M (std `noise`), and gives the two copies of each input unit different outgoing weights."""
    half = weight.repeat(2, 1) / 2                                     # [2·out, in]
    split = torch.randn(half.shape, generator=generator) * noise       # [2·out, in]
    return torch.cat([half + split, half - split], dim=1)              # [2·out, 2·in]


def widen_state(state: dict, hidden_size: int, noise: float, generator: torch.Generator) -> dict:
    """Doubles H, I and the number of heads (head size unchanged) of a BertForMaskedLM state dict, exactly."""
    wide = {}
    for name, value in state.items():
        if name.endswith("embeddings.weight"):                         # word [V,H], position [P,H], type [2,H]
            wide[name] = value.repeat(1, 2) / math.sqrt(2)
        elif name.endswith("attention.qkv.weight"):                    # Q, K, V blocks of [H,H] each
            wide[name] = torch.cat([_widen_linear(block, noise, generator) for block in value.split(hidden_size)])
        elif name.endswith("attention.qkv.bias"):
            wide[name] = torch.cat([block.repeat(2) for block in value.split(hidden_size)])
        elif name == "mlm_head.bias":                                  # [V]: over the vocabulary, unchanged
            wide[name] = value.clone()
        elif name.startswith("mlm_head.layer_norm."):                  # h/√2 twice, and E/√2: h'·E' = h·E
            wide[name] = value.repeat(2) / math.sqrt(2)
        elif value.dim() == 2:                                         # every other Linear
            wide[name] = _widen_linear(value, noise, generator)
        else:                                                          # biases, LayerNorm gamma/beta
            wide[name] = value.repeat(2)
    return wide


def stack_state(state: dict, num_layers: int, factor: int, identity: bool = False) -> dict:
    """Copies encoder layers 0..L-1 onto L..factor·L-1 (progressive stacking).

    identity: the copies start as (near) identity maps instead. A post-LN block is LN_f(h + FFN(h)) with
    h = LN_a(x + Attn(x)); with the two output maps (attention.out, ffn.down) zeroed it is LN_f(LN_a(x)). The input
    x = γ ⊙ n + β is the layer below's output LayerNorm (n normalised over H): its mean over H is ≈ mean(β) and its
    std ≈ c = √(mean(γ²) + var(β)) for every token, so a LayerNorm with scalar gain c and bias mean(β) gives back
    ≈ x. Not exact (the per-token mean and std wobble around those values), but far closer than a copy of the layer,
    so growing costs less accuracy; the copied Q/K/V and FFN-in weights come in as the zeroed output maps learn
    (their gradient is nonzero from the first step)."""
    stacked = dict(state)
    prefix = "bert.encoder.layers."
    if identity:  # the scalar LayerNorm that maps the layer below's output back to itself (≈)
        gamma, beta = (state[f"{prefix}{num_layers - 1}.ffn_norm.{rest}"] for rest in ("weight", "bias"))  # [H] each
        gain = (gamma.pow(2).mean() + beta.var(unbiased=False)).sqrt().item()          # c = √(mean γ² + var β)
        identity_norm = {"weight": torch.full_like(gamma, gain), "bias": torch.full_like(beta, beta.mean().item())}
    for name, value in state.items():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            for copy in range(1, factor):
                new = value.clone()
                if identity and rest.split(".")[0] in ("attention_norm", "ffn_norm"):
                    new = identity_norm[rest.split(".")[1]].clone()
                elif identity and rest.startswith(("attention.out.", "ffn.down.")):
                    new = torch.zeros_like(value)
                stacked[f"{prefix}{int(index) + copy * num_layers}.{rest}"] = new
    return stacked


def last_small_step(max_steps: int, fraction: float, max_small_steps: int) -> int:
    """The step after which the small model grows: `fraction` of the run, but never more than `max_small_steps`
    steps (0 = no cap), and always at least one step for the grown model.

    Why a cap: the 1-layer small model saturates. On CLUENER characters it reached 0.315 held-out accuracy after
    8,246 steps and 0.317-0.327 after 20,400 (docs/pretrain_lab.md, "Longer budgets"), so in a long run the steps past
    the cap go to BERT-mini, which is still learning when a 60-minute run ends.
    """
    step = round(fraction * max_steps)
    if max_small_steps:
        step = min(step, max_small_steps)
    return min(step, max_steps - 1)


def grown_row_length(cfg, grown_steps: int, max_positions: int, splits: int) -> tuple[int, str]:
    """序列长度预热 sequence-length warmup: the row length of a grown stage that will run `grown_steps` steps.

    A long stage reads rows of cfg.grown_max_len (e.g. 128 after the small model's 64), batch_size·max_len /
    grown_max_len of them per step (the same tokens), so each masked token sees more context. A short one keeps
    cfg.max_len, because the new positions start untrained and cost accuracy until they have trained a few hundred
    steps (docs/pretrain_lab.md, "Longer rows for a long grown stage").

    Args:
        max_positions: the grown model's position table; splits: W·k, processes x micro-batches.
    Returns:
        (row length, why a long stage keeps cfg.max_len: "" unless the longer rows cannot be used).
    """
    long = cfg.grown_max_len
    if long <= cfg.max_len or grown_steps < cfg.long_stage_min_steps:
        return cfg.max_len, ""
    if long > max_positions:
        return cfg.max_len, f"--grown-max-len {long} exceeds max_position_embeddings {max_positions}"
    if cfg.batch_size * cfg.max_len % (long * splits):
        return cfg.max_len, (f"{cfg.batch_size} rows of {cfg.max_len} tokens do not make rows of {long} that "
                             f"split evenly into {splits} process(es) x micro-batch(es)")
    return long, ""


def grown_stage_groups(model: BertForMaskedLM, cfg, grown_steps: int) -> list[dict]:
    """The grown stage's AdamW groups (差分学习率 differential learning rates): the layers stacking added learn at
    cfg.lr; the weights the small model trained (embeddings, its layer, the MLM head) at cfg.lr as well in a long
    stage (≥ cfg.long_stage_min_steps steps), at cfg.lr·cfg.growth_carried_lr_scale in a short one.

    Why: the small stage ends with its LR decayed to 0, in a minimum its weights have settled into. Warming them up
    again to cfg.lr costs held-out accuracy for a few hundred steps (SST-2 words: 0.40 -> 0.38), which a long stage
    wins back and a short one does not; the new layers have everything still to learn. The group structure is the
    same either way (only the LRs differ), so a resumed run loads its optimizer whatever it recomputes here.
    """
    new_layers = tuple(f"bert.encoder.layers.{i}." for i in range(SMALL_LAYERS, model.config.num_hidden_layers))
    carried_lr = cfg.lr if grown_steps >= cfg.long_stage_min_steps else cfg.lr * cfg.growth_carried_lr_scale
    return param_groups(model, carried_lr, cfg.weight_decay, head_lr=cfg.lr, head_prefixes=new_layers,
                        head_name="new layers")


def small_config(config: BertConfig, widen_times: int, num_layers: int) -> BertConfig:
    """The model to start from: H, I and heads halved `widen_times` times, `num_layers` layers.

    PretrainConfig calls it at start-up with the run's shape, so a shape it cannot shrink is refused before the
    run, not at the growth step after ~95% of it.
    """
    shrink = 2 ** widen_times
    odd = [f"{name} {getattr(config, name)}" for name in ("hidden_size", "num_attention_heads", "intermediate_size")
           if getattr(config, name) % shrink]
    if config.num_hidden_layers % num_layers:
        odd.append(f"num_hidden_layers {config.num_hidden_layers} (not a multiple of {num_layers})")
    if odd:
        raise ConfigError(f"growth trains a model of 1/{shrink} the width first, so hidden_size, num_attention_heads "
                          f"and intermediate_size must divide by {shrink} ({', '.join(odd)} does not); change them, "
                          f"or pass --growth-fraction 0")
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
    its columns of the output map are added onto the original's and zeroed: [[A, B], [C, D]] becomes
    [[A+B, 0], [C+D, 0]] = [[W, 0], [W, 0]], which maps [a, a'] to [Wa, Wa] for ANY a', so the grown model still
    computes the same function and the new heads come in through their gradient.
    """
    for name, value in state.items():
        if name.endswith("attention.qkv.weight") or name.endswith("attention.qkv.bias"):
            value[original_size:hidden_size] = 0.0                  # [3H(,H)]: Q rows of the copies (Q = rows 0..H-1)
        elif name.endswith("attention.out.weight"):                 # [H,H]: input columns = heads, copies last
            copies = value[:, original_size:].reshape(hidden_size, -1, original_size)  # [H, copies, H0]
            value[:, :original_size] += copies.sum(dim=1)
            value[:, original_size:] = 0.0
    return state


def grow(model: BertForMaskedLM, target: BertConfig, noise: float, seed: int,
         free_copies: bool = False, identity_stack: bool = False) -> BertForMaskedLM:
    """A `target`-shaped BertForMaskedLM computing (nearly) what `model` computes: widened until H matches
    (exactly; `noise` is the std of the uneven split that breaks the copies' symmetry), then stacked until L
    matches (not exact). With `free_copies`, the copied heads start with uniform attention (free_copied_heads)."""
    state = {name: value.detach().float().cpu() for name, value in model.state_dict().items()}
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    original, generator = hidden, torch.Generator().manual_seed(seed)
    while hidden < target.hidden_size:
        state, hidden = widen_state(state, hidden, noise, generator), hidden * 2
    if free_copies and hidden > original:
        state = free_copied_heads(state, hidden, original)
    if target.num_hidden_layers != layers:
        state = stack_state(state, layers, target.num_hidden_layers // layers, identity_stack)
    grown = BertForMaskedLM(target)
    grown.load_state_dict(state)
    return grown.to(next(model.parameters()).device)


def _tile_moment(name: str, moment: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """An AdamW moment of a small-model weight, tiled like widen_state tiles the weight but NOT rescaled: AdamW's
    step m/√v does not depend on the gradient's scale, and where widening shrinks a gradient (a unit's two copies
    share it) the carried v is larger than the new one, so the first steps are smaller, never larger."""
    if name.endswith("embeddings.weight"):                             # [V,H], [P,H], [2,H]
        return moment.repeat(1, 2)
    if name.endswith("attention.qkv.weight"):                          # Q, K, V blocks of [H,H]
        return torch.cat([block.repeat(2, 2) for block in moment.split(hidden_size)])
    if name.endswith("attention.qkv.bias"):
        return torch.cat([block.repeat(2) for block in moment.split(hidden_size)])
    if name == "mlm_head.bias":                                        # [V]
        return moment.clone()
    return moment.repeat(2, 2) if moment.dim() == 2 else moment.repeat(2)


@torch.no_grad()
def carry_adam_state(small: BertForMaskedLM, small_optimizer: torch.optim.Optimizer, grown: BertForMaskedLM,
                     grown_optimizer: torch.optim.Optimizer, free_copies: bool) -> int:
    """Gives the grown model's AdamW the small model's moments (exp_avg, exp_avg_sq, step) for every weight the
    small model had, tiled like the weights (_tile_moment). The layers stacking added keep a fresh state: they are
    new, and their output maps start at zero. Freed copies (free_copied_heads) get zero moments where their weights
    were zeroed. Widening by 2 only, as grow() does from small_config(config, 1, ...). Returns the tensors carried.

    Why: a fresh AdamW's first steps are ±LR on every weight whatever its gradient; measured on SST-2, held-out
    accuracy fell 0.29 -> 0.25 within 60 steps of growing, and a fresh AdamW on the small model alone (no
    growing) cost 0.02 where the carried state cost 0.006 (docs/pretrain_lab.md, "Carrying AdamW's moments across
    the growth").
    """
    hidden = small.config.hidden_size
    if grown.config.hidden_size != 2 * hidden:
        raise ValueError(f"carry_adam_state: H{hidden} -> H{grown.config.hidden_size}; only doubling is supported")
    small_names = {id(param): name for name, param in small.named_parameters()}
    grown_params = dict(grown.named_parameters())
    for param, state in small_optimizer.state.items():
        name = small_names[id(param)]
        target = grown_params[name]  # embeddings, layer 0, MLM head: the same names in the grown model
        new = {"step": state["step"].clone()}
        for key in ("exp_avg", "exp_avg_sq"):
            moment = _tile_moment(name, state[key], hidden)  # the same shape as the grown weight
            if free_copies and name.endswith(("attention.qkv.weight", "attention.qkv.bias")):
                moment[hidden:2 * hidden] = 0.0              # the copies' Q rows, zeroed like their weights
            elif free_copies and name.endswith("attention.out.weight"):
                moment[:, hidden:] = 0.0                     # the copies' output columns, zeroed likewise
            new[key] = moment.to(target.device)
        grown_optimizer.state[target] = new
    return len(small_optimizer.state)


def saved_hidden_size(checkpoint_path) -> int | None:
    """H of the model in a training checkpoint (None if there is none): tells --resume whether the run had grown."""
    try:
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        return state["model"]["bert.embeddings.word_embeddings.weight"].shape[1]
    except Exception:  # missing or damaged: load_training_state says so in one line, naming the file
        return None

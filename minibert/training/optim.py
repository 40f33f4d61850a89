"""AdamW with parameter groups: 权重衰减 weight decay where it belongs, and 差分学习率 differential learning rates.

Why groups at all?
  * Decoupled weight decay (AdamW, Loshchilov & Hutter 2019) shrinks weights toward 0 each step. Applied to a
    LayerNorm gamma it pulls the scale toward 0; applied to a bias it is a deterministic shrink toward 0 with no
    benefit. google-research/bert (optimization.py, exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"])
    therefore decays every weight matrix and embedding, but not biases or LayerNorm parameters.
  * The rule is decided by MODULE TYPE and parameter name within the module, not by searching the full name for
    strings such as "LayerNorm.weight": a renamed module (ours is `attention_norm`) would silently match nothing.
  * Fine-tuning often gives the freshly initialised head a larger LR than the pretrained encoder, and may shrink
    the LR layer by layer toward the embeddings (layer-wise LR decay, Clark et al. 2020, ELECTRA §A).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..layers import LayerNorm


def no_weight_decay(module: nn.Module, param_name: str) -> bool:
    """Biases and LayerNorm gamma/beta are not decayed."""
    return isinstance(module, (LayerNorm, nn.LayerNorm)) or param_name == "bias"


def layer_depth(full_name: str, num_layers: int) -> int:
    """0 for the embeddings, i+1 for encoder layer i, num_layers+1 for everything above the encoder."""
    if ".embeddings." in f".{full_name}":
        return 0
    match = re.search(r"encoder\.layers\.(\d+)\.", full_name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr: float | None = None,
                 head_prefixes: tuple[str, ...] = (), layer_decay: float | None = None,
                 head_name: str = "head") -> list[dict]:
    """Split the trainable parameters into AdamW groups.

    Args:
        lr: peak LR of the encoder (and of everything when head_lr is None); with layer_decay, the rate the
            scaling starts from: the top layer gets lr * layer_decay.
        weight_decay: applied to weights only (see no_weight_decay).
        head_lr: LR for parameters whose full name starts with one of `head_prefixes` (e.g. "classifier").
        head_name: what the group table calls them (pretraining's grown stage: "new layers").
        layer_decay: if set (e.g. 0.8), encoder layer i gets lr * layer_decay ** (L - i), the embeddings the least.
    Returns:
        A list of dicts for torch.optim.AdamW, each with extra keys "name" and "param_names" for the table.
    """
    num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0)
    groups: dict[tuple, dict] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{param_name}" if module_name else param_name
            decay = 0.0 if no_weight_decay(module, param_name) else weight_decay
            if head_lr is not None and full.startswith(head_prefixes):
                part, group_lr = head_name, head_lr
            elif layer_decay is not None:
                depth = layer_depth(full, num_layers)
                part, group_lr = f"depth {depth}", lr * layer_decay ** (num_layers + 1 - depth)
            else:
                part, group_lr = "model", lr
            key = (part, group_lr, decay)
            if key not in groups:
                kind = "weights" if decay else "biases+LayerNorm"
                groups[key] = {"params": [], "param_names": [], "lr": group_lr, "weight_decay": decay,
                               "name": f"{part} {kind}"}
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(full)
    return list(groups.values())


def build_adamw(groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW, not Adam(weight_decay=λ): that one is L2 regularisation, whose gradient term Adam divides by √v, so
    busy weights are hardly decayed (权重衰减 ≠ L2 正则 under Adam; docs/notes.md). AdamW shrinks the weights
    directly (Loshchilov & Hutter 2019).

    With Adam 偏差修正 bias correction (torch always applies it). Google's BERT optimizer skipped it: early on
    m ≈ (1-β1)·g and √v ≈ √(1-β2)·|g|, so the first update is ≈ 0.1/0.032 ≈ 3.2× lr, too LARGE, which is one
    more reason BERT needed warmup. eps=1e-6 as in BERT (torch's default is 1e-8, the course's 003 passes 1e-8).

    A porting trap: transformers' old AdamW defaulted to weight_decay=0.0, torch.optim.AdamW to 0.01. The same
    `AdamW(model.parameters(), lr=...)` call then decays every tensor, LayerNorm γ and biases included, unless
    the groups (param_groups) say otherwise."""
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=betas, eps=eps, fused=fused)


def format_group_table(groups: list[dict]) -> str:
    """A printable table: group, example names, tensor and parameter counts, lr, weight decay."""
    rows = [("group", "e.g.", "tensors", "params", "lr", "wd")]
    for g in groups:
        example = g["param_names"][0] + (" ..." if len(g["param_names"]) > 1 else "")
        rows.append((g["name"], example, str(len(g["params"])), f"{sum(p.numel() for p in g['params']):,}",
                     f"{g['lr']:.2e}", f"{g['weight_decay']:g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""Demos of checkpoint conversion: TF→PyTorch 参数名映射 name mapping (kernel vs output_weights), and the key
drift (`bert.` prefix, LayerNorm gamma/beta) that silently leaves weights untrained in naive loaders.
The code they exercise is minibert/checkpoint/ (mapping.py is the table)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_pretrained, minibert_to_hf, plan_conversion
from ..checkpoint.mapping import BERT_ROWS, HEAD_ROWS
from ..model import BertForMaskedLM, BertForPreTraining
from ..training.io import atomic_save_safetensors
from .common import DemoContext, conclude, show, table, tiny_config, title

GOOGLE_INDEX = (Path(__file__).resolve().parents[2].parent
                / "shared/data/bert-mini-uncased_L-4_H-256_A-4/bert_model.ckpt.index")


def _braced(names: tuple[str, ...]) -> str:
    """('a/query/k', 'a/key/k', 'a/value/k') -> 'a/{query,key,value}/k' for a compact table."""
    if len(names) == 1:
        return names[0]
    parts = [n.split("/") for n in names]
    differ = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
    return "/".join(("{" + ",".join(p[i] for p in parts) + "}") if i in differ else seg
                    for i, seg in enumerate(parts[0]))


def tf_name_mapping(ctx: DemoContext) -> dict:
    title("TF→PyTorch 参数名映射 name mapping: one table, kernel transposed, output_weights not")
    picks = ("embeddings.layer_norm.weight", "encoder.layers.{i}.attention.qkv.weight", "encoder.layers.{i}.ffn.up.weight",
             "mlm_head.bias", "nsp_head.weight")
    rows = [(r.minibert, _braced(r.tf), "yes" if r.tf_transpose else "no")
            for r in BERT_ROWS + HEAD_ROWS if r.minibert in picks]
    table(rows, ("minibert name", "Google TF name(s)", "transpose"))
    rng = np.random.default_rng(0)
    H, I = 4, 6
    x = rng.standard_normal((2, H)).astype(np.float32)  # [B,H]
    kernel = rng.standard_normal((H, I)).astype(np.float32)  # TF dense kernel [in, out]: y = x @ K
    linear = torch.nn.Linear(H, I, bias=False)  # torch weight [out, in]: y = x @ W.T
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.T))
    tf_y, torch_y = x @ kernel, linear(torch.from_numpy(x)).detach().numpy()
    show("dense: max |x@K - Linear(W=K.T)(x)|", float(np.abs(tf_y - torch_y).max()))
    # Google created NSP/classifier weights as output_weights [num_labels, H] and used
    # tf.matmul(x, output_weights, transpose_b=True): already torch's [out, in] layout.
    output_weights = rng.standard_normal((2, H)).astype(np.float32)  # [2,H]
    nsp = torch.nn.Linear(H, 2, bias=False)
    with torch.no_grad():
        nsp.weight.copy_(torch.from_numpy(output_weights))  # NOT transposed
    show("nsp: max |x@output_weights.T - Linear(W=output_weights)(x)|",
         float(np.abs(x @ output_weights.T - nsp(torch.from_numpy(x)).detach().numpy()).max()))
    show("nsp transposed by mistake: shape", f"{output_weights.T.shape} vs expected {tuple(nsp.weight.shape)}")
    result = {"dense_diff": float(np.abs(tf_y - torch_y).max())}
    if GOOGLE_INDEX.is_file():
        from ..checkpoint import TFCheckpoint

        ckpt = TFCheckpoint(GOOGLE_INDEX)
        config = tiny_config()
        cfg = json.loads((GOOGLE_INDEX.parent / "bert_config.json").read_text())
        config = config.replace(**{k: cfg[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                        "num_attention_heads", "intermediate_size",
                                                        "max_position_embeddings", "type_vocab_size")})
        with torch.device("meta"):
            target = BertForPreTraining(config)
        shapes = {name: tuple(info.shape) for name, info in ckpt.tensors.items()}
        plan = plan_conversion(shapes, "tf", {k: tuple(v.shape) for k, v in target.state_dict().items()},
                               config.num_hidden_layers)
        print(f"   Google's genuine BERT-mini index ({len(shapes)} tensors), planned into BertForPreTraining:")
        print("   " + plan.report.format().replace("\n", "\n   "))
        result["google_tensors"] = len(shapes)
        result["google_accounted"] = plan.report.num_source_tensors
    else:
        print("   (Google's BERT-mini index not found under ../shared/data: skipping the real-index part)")
    conclude("TF dense kernels are [in,out] and must be transposed into torch's [out,in]; output_weights were "
             "created [out,in] and used with transpose_b=True, so they load as they are. Q, K, V are concatenated "
             "into minibert's fused qkv; every tensor is accounted for in the coverage report")
    return result


def _legacy(hf: dict, prefix: bool, gamma_beta: bool) -> dict:
    """HF-named tensors as older files store them: maybe without `bert.`, maybe with LayerNorm.gamma/beta."""
    out = {}
    for name, tensor in hf.items():
        if not prefix:
            name = name.removeprefix("bert.")
        if gamma_beta:
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        out[name] = tensor
    return out


def key_drift(ctx: DemoContext) -> dict:
    title("键名漂移 key drift: `bert.` prefix and LayerNorm gamma/beta; strict=False hides what was not loaded")
    torch.manual_seed(0)
    config = tiny_config()
    trained = BertForMaskedLM(config)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # pretend training moved the LayerNorm parameters
    today = minibert_to_hf(trained.state_dict(), config.num_hidden_layers)  # today's HF names, with `bert.`
    cases = {"gamma/beta names (pytorch-pretrained-bert era)": _legacy(today, prefix=True, gamma_beta=True),
             "no `bert.` prefix (a BertModel file)": _legacy(today, prefix=False, gamma_beta=False)}
    rows, result = [], {}
    for case, old in cases.items():
        # A loader that expects today's names with load_state_dict(strict=False) keeps its init for every
        # expected key the file lacks, and says nothing unless someone prints result.missing_keys.
        missing = sorted(set(today) - set(old))
        with tempfile.TemporaryDirectory() as tmp:
            atomic_save_safetensors(old, Path(tmp) / "model.safetensors")
            config.to_json(Path(tmp) / "config.json")
            loaded = load_pretrained(BertForMaskedLM, tmp)
        exact = all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(),
                                                      trained.state_dict().values()))
        all_norm = all("LayerNorm" in n for n in missing)
        rows.append((case, len(missing), "yes" if all_norm else "no", "exact" if exact else "DIFFERENT"))
        result[case] = {"naive_missing": len(missing), "missing_all_layernorm": all_norm, "ours_exact": exact,
                        "example": missing[0]}
    table(rows, ("old file", "keys strict=False leaves at init", "all LayerNorm?", "minibert load_pretrained"))
    gamma = result["gamma/beta names (pytorch-pretrained-bert era)"]
    print(f"   e.g. left at init: {gamma['example']} (gamma = 1.0, beta = 0.0: the model runs, just worse)")
    conclude(f"with gamma/beta names a strict=False load silently skips exactly the {gamma['naive_missing']} "
             f"LayerNorm tensors; without the prefix it skips the whole encoder. minibert's loader renames both and "
             f"must account for every tensor, so each file loads exactly")
    return result

"""Demos of the model's parts: 注意力掩码 attention mask and padding, 层归一化 LayerNorm, post-LN vs pre-LN,
the tied MLM decoder and the sparse MLM head. The code they exercise is minibert/layers.py and model.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import BertConfig
from ..layers import LayerNorm, TransformerBlock
from ..model import IGNORE_INDEX, BertForMaskedLM, BertModel, init_weights
from ..training.mfu import forward_flops_per_token
from .common import DemoContext, conclude, max_abs_diff, show, table, tiny_config, title


def attention_mask(ctx: DemoContext) -> dict:
    title("注意力掩码 attention mask: padding must not change the real tokens' outputs")
    torch.manual_seed(0)
    model = BertModel(tiny_config(initializer_range=0.1)).eval()  # wider than 0.02: less uniform attention
    sentence = torch.tensor([[2, 17, 42, 8, 33, 3]])  # [1,6]: [CLS] four tokens [SEP]
    alone = model(sentence).last_hidden_state  # [1,6,H]
    batch = torch.zeros(2, 10, dtype=torch.long)  # [2,10] padded with [PAD]=0 to the longest sentence
    batch[0, :6] = sentence[0]
    batch[1] = torch.tensor([2, 50, 51, 52, 53, 54, 55, 56, 57, 3])
    mask = (batch != 0).long()  # [2,10]: 1 real token, 0 padding
    with_mask = model(batch, attention_mask=mask).last_hidden_state[:1, :6]  # [1,6,H]
    without = model(batch).last_hidden_state[:1, :6]
    out = model(batch, attention_mask=mask, output_attentions=True)
    probs = out.attentions[0][0, 0]  # [T,T] layer 0, sentence 0, head 0
    reference_path = out.last_hidden_state[:1, :6]
    print("   mask of sentence 0:", mask[0].tolist())
    print("   layer-0 head-0 attention of query [CLS] over the 10 keys:")
    print("   " + " ".join(f"{p:.2f}" for p in probs[0].tolist()))
    d_mask, d_none = max_abs_diff(with_mask, alone), max_abs_diff(without, alone)
    show("max |padded+mask - alone| on the 6 real tokens", d_mask)
    show("max |padded, NO mask - alone|", d_none)
    show("attention weight on the 4 padded keys", probs[0, 6:].sum().item())
    show("fast SDPA path vs reference path", max_abs_diff(with_mask, reference_path))
    conclude(f"with the mask the padded sentence gives the same vectors ({d_mask:.0e}); without it the [PAD] "
             f"keys leak in (diff {d_none:.2f}). Padded QUERY rows still get outputs: ignore them in the loss "
             f"(label -100) and in pooling")
    return {"with_mask": d_mask, "without_mask": d_none, "pad_weight": probs[0, 6:].sum().item()}


def layer_norm(ctx: DemoContext) -> dict:
    title("层归一化 LayerNorm: y = γ (x - mean) / sqrt(var + eps) + β over the hidden axis")
    torch.manual_seed(0)
    H, eps = 32, 1e-12
    x = torch.randn(4, H) * 3 + 1  # [4,H]
    ln = LayerNorm(H, eps)
    ours = ln(x)  # [4,H]
    formula = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    torch_ln = F.layer_norm(x, (H,), eps=eps)
    # The Annotated Transformer (and ports of it) use the UNBIASED std and put eps OUTSIDE the root.
    annotated = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
    show("max |ours - formula|", max_abs_diff(ours, formula))
    show("max |ours - torch.nn.functional.layer_norm|", max_abs_diff(ours, torch_ln))
    show("max |ours - (x-mean)/(std_unbiased+eps)|", max_abs_diff(ours, annotated))
    show("per-token mean / std after LN", f"{ours.mean().item():.1e} / {ours.std(-1, unbiased=False).mean().item():.4f}")
    show("sqrt(H/(H-1)), the unbiased/biased ratio at H=32", (H / (H - 1)) ** 0.5)
    conclude(f"ours equals the formula and torch; the (x-mean)/(std+eps) variant with the unbiased std is off by "
             f"{max_abs_diff(ours, annotated):.3f} at H={H}, enough to break parity with BERT checkpoints")
    return {"formula": max_abs_diff(ours, formula), "torch": max_abs_diff(ours, torch_ln),
            "unbiased_variant": max_abs_diff(ours, annotated)}


class PreLNBlock(torch.nn.Module):
    """The pre-LN variant for comparison only: x + Sublayer(LN(x)) (GPT-2, most modern encoders).
    It reuses the post-LN block's sub-modules; only the order of the residual add and the LayerNorm changes."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.block = TransformerBlock(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B,T,H]
        b = self.block
        x = x + b.attention(b.attention_norm(x))[0]  # [B,T,H] the residual stream is never normalised...
        return x + b.ffn(b.ffn_norm(x))  # ...so a final LayerNorm is needed after the last block


def pre_post_ln(ctx: DemoContext) -> dict:
    title("post-LN (BERT) vs pre-LN: where the LayerNorm sits in the residual block")
    torch.manual_seed(0)
    # A wider init than BERT's 0.02 (about Xavier for H=64), so that twelve random sublayers visibly add up.
    config = tiny_config(hidden_size=64, intermediate_size=256, initializer_range=0.15)
    post = [TransformerBlock(config) for _ in range(12)]
    pre = [PreLNBlock(config) for _ in range(12)]
    for block in post + pre:
        block.apply(lambda m: init_weights(m, config.initializer_range))
    x = torch.randn(4, 16, 64)  # [B,T,H] unit-RMS input
    rms = {"post-LN  LN(x + F(x))": [], "pre-LN   x + F(LN(x))": []}
    h_post, h_pre = x, x
    with torch.no_grad():
        for b_post, b_pre in zip(post, pre):
            h_post = b_post(h_post)[0]
            h_pre = b_pre(h_pre)
            rms["post-LN  LN(x + F(x))"].append(h_post.pow(2).mean().sqrt().item())
            rms["pre-LN   x + F(LN(x))"].append(h_pre.pow(2).mean().sqrt().item())
    table([(name, *(f"{v:.2f}" for v in values[1::2])) for name, values in rms.items()],
          ("RMS of the residual stream after layer", *(str(i) for i in range(2, 13, 2))))
    post_last, pre_last = rms["post-LN  LN(x + F(x))"][-1], rms["pre-LN   x + F(LN(x))"][-1]
    conclude(f"post-LN renormalises after every add (RMS {post_last:.2f} at layer 12); pre-LN keeps an untouched "
             f"identity path, so the stream grows ({pre_last:.1f}) and needs a final LN, but gradients reach the "
             f"bottom directly: it trains without warmup (Xiong et al. 2020). BERT checkpoints are post-LN")
    return {"post": rms["post-LN  LN(x + F(x))"], "pre": rms["pre-LN   x + F(LN(x))"]}


def tied_decoder(ctx: DemoContext) -> dict:
    title("绑定解码器 tied decoder: the MLM output projection IS the word-embedding matrix E [V,H]")
    torch.manual_seed(0)
    config = tiny_config()
    model = BertForMaskedLM(config)
    E = model.bert.embeddings.word_embeddings.weight  # [V,H]
    head_params = [n for n, _ in model.mlm_head.named_parameters()]
    show("parameters of mlm_head", head_params)
    ids = torch.randint(5, 30, (2, 12))  # [B,T] inputs use only token IDs 5..29
    h = model.bert(ids).last_hidden_state  # [B,T,H]
    logits = model(ids).logits  # [B,T,V]
    head = model.mlm_head
    by_hand = head.layer_norm(F.gelu(head.dense(h))) @ E.T + head.bias  # [B,T,V] = transform(h) Eᵀ + b
    show("max |logits - transform(h) @ E.T + b|", max_abs_diff(logits, by_hand))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, 3] = ids[:, 3]
    model(ids, labels=labels).loss.backward()
    rows_with_grad = (E.grad.abs().sum(1) > 0)  # [V]
    unseen = torch.ones(config.vocab_size, dtype=torch.bool)
    unseen[ids.unique()] = False
    show("embedding rows of tokens never in the input", int(unseen.sum()))
    show("...of which get a gradient (from the softmax side)", int((rows_with_grad & unseen).sum()))
    base = BertConfig(vocab_size=30522, hidden_size=768)
    show("parameters saved in BERT-base (V x H)", f"{base.vocab_size * base.hidden_size:,}")
    conclude("the head owns only dense, layer_norm and a [V] bias; logits = transform(h)·Eᵀ + b, so E learns from "
             "both ends: even tokens absent from the input get gradient. Checkpoints store E once "
             "(cls/predictions has only output_bias)")
    return {"logits_diff": max_abs_diff(logits, by_hand), "unseen": int(unseen.sum()),
            "unseen_with_grad": int((rows_with_grad & unseen).sum()), "head_params": head_params}


def sparse_mlm(ctx: DemoContext) -> dict:
    title("稀疏 MLM 头 sparse MLM head: project only the M masked positions onto the vocabulary")
    torch.manual_seed(0)
    config = tiny_config()
    model = BertForMaskedLM(config)
    ids = torch.randint(5, config.vocab_size, (4, 32))  # [B,T]
    masked_share = 0.15  # BERT's; set it to 1.0 and the saving below disappears
    labels = torch.where(torch.rand(4, 32) < masked_share, ids, torch.full_like(ids, IGNORE_INDEX))  # [B,T]
    labels[:, 0] = ids[:, 0]
    sparse = model(ids, labels=labels)  # logits [M,V]
    full_logits = model(ids).logits  # [B,T,V]
    full_loss = F.cross_entropy(full_logits.reshape(-1, config.vocab_size), labels.reshape(-1))  # ignores -100
    show("logits shape with labels (sparse)", tuple(sparse.logits.shape))
    show("logits shape without labels (full)", tuple(full_logits.shape))
    show("loss sparse / full with ignore_index=-100", f"{sparse.loss.item():.6f} / {full_loss.item():.6f}")
    mini = BertConfig.mini(vocab_size=30522)
    full = forward_flops_per_token(mini, 128, predicted_fraction=1.0)
    predicted = sparse.logits.shape[0] / ids.numel()  # M / (B·T): the share this batch actually predicts
    masked = forward_flops_per_token(mini, 128, predicted_fraction=predicted)
    show(f"BERT-mini V30522 T128: forward GFLOP/token full vs sparse at {predicted:.0%} predicted",
         f"{full / 1e9:.4f} vs {masked / 1e9:.4f}")
    conclude(f"same loss ({abs(sparse.loss.item() - full_loss.item()):.0e} apart) from {sparse.logits.shape[0]} "
             f"rows instead of {ids.numel()}; in BERT-mini the vocab projection is most of the compute, so "
             f"sparse MLM saves {100 * (1 - masked / full):.0f}% of the forward FLOPs")
    return {"loss_diff": abs(sparse.loss.item() - full_loss.item()), "M": sparse.logits.shape[0],
            "saved": 1 - masked / full}

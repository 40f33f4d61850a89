"""Demos for the course's questions about the model itself: 位置编码 why position is not an input (000 log, line 56),
多头 whether the heads are trained together (line 68), train()/eval() and self.training (003, line 252), and
encoder-only vs encoder–decoder as a causal vs a bidirectional mask on the same attention module (004, line 42).

Dimension legend: B batch, T sequence length, H hidden size, N heads, D head size.
"""

from __future__ import annotations

import torch

from ..layers import MultiHeadSelfAttention
from ..model import BertForMaskedLM, BertModel
from .common import DemoContext, conclude, max_abs_diff, show, tiny_config, title


def positions_not_input(ctx: DemoContext) -> dict:
    title("位置编码 position embeddings: computed from arange(T) inside the model, never passed in")
    torch.manual_seed(0)
    model = BertModel(tiny_config(), add_pooling_layer=False).eval()
    ids = torch.randint(5, 100, (1, 6))  # [1,T]
    order = torch.tensor([3, 0, 5, 1, 4, 2])  # a shuffle of the tokens
    with torch.no_grad():
        out = model(ids).last_hidden_state  # [1,T,H]
        shuffled = model(ids[:, order]).last_hidden_state  # [1,T,H]
        with_positions = max_abs_diff(shuffled, out[:, order])
        model.embeddings.position_embeddings.weight.zero_()  # what the model would be WITHOUT positions
        out = model(ids).last_hidden_state
        without_positions = max_abs_diff(model(ids[:, order]).last_hidden_state, out[:, order])
    show("positions used for T=6", torch.arange(6).tolist())
    show("shuffle tokens: |out(shuffled) - shuffle(out)|, with positions", with_positions)
    show("the same with the position table zeroed", without_positions)
    conclude("position i's vector is row i of a learned table, and i is just the index 0..T-1, so the model builds "
             "it itself (BertEmbeddings.forward). Without it, attention is order-blind: shuffling the words only "
             "shuffles the outputs (a bag of words)")
    return {"with_positions": with_positions, "without_positions": without_positions}


def heads_together(ctx: DemoContext) -> dict:
    title("多头注意力 the heads are ONE layer: one backward updates all of them at once")
    torch.manual_seed(0)
    config = tiny_config()
    N, D, H = config.num_attention_heads, config.head_size, config.hidden_size
    ids = torch.randint(5, 100, (2, 10))  # [B,T]
    labels = ids.clone()
    result = {}
    for name in ("random init", "all heads copied from head 0"):
        model = BertForMaskedLM(config)
        attention = model.bert.encoder.layers[0].attention
        if name != "random init":
            with torch.no_grad():
                qkv = attention.qkv.weight.view(3, N, D, H)  # [3,N,D,H]: the rows of Q, K, V per head
                qkv[:, 1:] = qkv[:, :1].clone()
                attention.qkv.bias.view(3, N, D)[:, 1:] = attention.qkv.bias.view(3, N, D)[:, :1].clone()
                out = attention.out.weight.view(H, N, D)  # [H,N,D]: the output columns that read each head
                out[:, 1:] = out[:, :1].clone()
        model(ids, labels=labels).loss.backward()
        grad = attention.qkv.weight.grad.view(3, N, D, H)  # [3,N,D,H]
        norms = grad.pow(2).sum(dim=(0, 2, 3)).sqrt()  # [N]
        spread = max((grad[:, h] - grad[:, 0]).abs().max().item() for h in range(N))
        show(f"{name}: gradient norm per head", [round(v, 4) for v in norms.tolist()])
        show(f"{name}: max |grad(head h) - grad(head 0)|", spread)
        result[name] = {"norms": norms.tolist(), "spread": spread}
    conclude("Q, K and V of all heads are one [3H,H] matrix, so one loss.backward() gives every head its gradient "
             "and one optimizer step moves them all together. They end up different only because they START "
             "different: with dropout off (as here), heads copied from one another get identical gradients and stay "
             "copies forever; attention dropout would separate them, but only as noise")
    return result


def train_eval_mode(ctx: DemoContext) -> dict:
    title("train() / eval(): a switch (self.training) read by dropout; it trains nothing")
    torch.manual_seed(0)
    model = BertModel(tiny_config(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1))
    ids = torch.randint(5, 100, (1, 8))  # [1,T]
    before = [p.clone() for p in model.parameters()]
    model.train()
    with torch.no_grad():
        train_diff = max_abs_diff(model(ids).last_hidden_state, model(ids).last_hidden_state)
    model.eval()
    with torch.no_grad():
        eval_diff = max_abs_diff(model(ids).last_hidden_state, model(ids).last_hidden_state)
    flags = {m.training for m in model.modules()}
    unchanged = max_abs_diff(before, list(model.parameters()))
    show("train(): two forward passes differ by", train_diff)
    show("eval(): two forward passes differ by", eval_diff)
    show("after eval(), self.training of every submodule", sorted(flags))
    show("weights changed by train()/eval()", unchanged)
    conclude("model.train()/model.eval() set self.training on every submodule; nn.Dropout (and the attention's "
             "dropout_p) read it. They change no weight: training is backward + optimizer.step(). Call eval() "
             "before evaluating and train() again before the next training step")
    return {"train_diff": train_diff, "eval_diff": eval_diff, "flags": sorted(flags), "unchanged": unchanged}


def causal_vs_bidirectional(ctx: DemoContext) -> dict:
    title("编码器 vs 编码器-解码器 encoder-only vs encoder-decoder: the same attention, a different mask")
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(tiny_config()).eval()
    T = 5
    x = torch.randn(1, T, 32)  # [B,T,H]
    changed = x.clone()
    changed[0, -1] += 1.0  # change only the LAST token
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]  # [1,1,T,T]: query i sees keys 0..i
    result = {}
    with torch.no_grad():
        for name, mask in (("bidirectional (BERT)", None), ("causal (GPT, a decoder)", causal)):
            out, probs = attention(x, mask, return_probs=True)  # [1,T,H], [1,N,T,T]
            out2, _ = attention(changed, mask, return_probs=True)
            moved = (out2 - out)[0].abs().amax(dim=-1)  # [T] how much each position's output moved
            above = probs[0].triu(diagonal=1).sum().item()  # weight on FUTURE keys
            show(f"{name}: output change per position", [round(v, 3) for v in moved.tolist()])
            show(f"{name}: attention on future keys (summed)", above)
            result[name] = {"moved": moved.tolist(), "future_weight": above}
    conclude("BERT is encoder-only: every token sees both sides (fit for understanding: classification, NER). A "
             "decoder masks the future (fit for generating left to right); an encoder-decoder (T5, the original "
             "Transformer) adds cross-attention from the decoder to the encoder. Same module, different mask")
    return result

"""Fine-tuning tricks the course asks about that minibert's loop does not ship as flags: 对抗训练 FGM adversarial
training under a GradScaler (000 log, line 71), 焦点损失 focal loss (line 174), and 冻结编码器 freezing the encoder
(004, line 154). Each is the smallest correct version, with a demo; copy it into your own loop if you need it.

Dimension legend: B batch, T sequence length, H hidden size, V vocabulary, C classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import BertForSequenceClassification
from ..model import IGNORE_INDEX
from .common import DemoContext, conclude, error_line, max_abs_diff, show, tiny_config, title


class FGM:
    """Fast Gradient Method (Miyato et al. 2017) on the word embeddings: after the normal backward, move the
    embedding table one step of size epsilon along its gradient (r = ε·g/‖g‖), run a NEW forward and backward on
    that perturbed input (the gradients add up in .grad), then put the table back."""

    def __init__(self, embedding: nn.Embedding, epsilon: float = 1.0):
        self.embedding, self.epsilon, self.backup = embedding, epsilon, None

    def attack(self) -> None:
        grad = self.embedding.weight.grad  # [V,H]; under a GradScaler it is scaled, but g/‖g‖ cancels the scale
        norm = grad.norm()
        if torch.isfinite(norm) and norm > 0:
            self.backup = self.embedding.weight.data.clone()
            self.embedding.weight.data.add_(self.epsilon * grad / norm)

    def restore(self) -> None:
        if self.backup is not None:
            self.embedding.weight.data.copy_(self.backup)
            self.backup = None


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 − p_true)^γ, so confident, easy examples count
    less. γ = 0 is plain cross-entropy. Built from torch operations only, so autograd differentiates it: no custom
    backward, no .item() or numpy inside. logits [N,C], labels [N] (-100 = ignored). Returns the mean."""
    keep = labels != IGNORE_INDEX  # [N]
    log_p = F.log_softmax(logits[keep].float(), dim=-1)  # [N',C]
    log_p_true = log_p.gather(1, labels[keep, None]).squeeze(1)  # [N']
    return (-(1 - log_p_true.exp()).pow(gamma) * log_p_true).mean()


def freeze_encoder(model: nn.Module) -> int:
    """Stop training `model.bert` (its parameters get no gradient): BERT as a 特征提取器 feature extractor; the task
    head stays trainable. Returns the number of parameters left trainable. Build the optimizer AFTER this, from the
    trainable parameters only."""
    for p in model.bert.parameters():
        p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _batch(vocab_size: int, generator: torch.Generator):
    ids = torch.randint(5, vocab_size, (4, 12), generator=generator)  # [B,T]
    return ids, torch.randint(0, 3, (4,), generator=generator)  # [B] labels of 3 classes


def fgm_fp16(ctx: DemoContext) -> dict:
    title("对抗训练 FGM with mixed precision: two backward passes, ONE GradScaler, no retain_graph")
    generator = torch.Generator().manual_seed(0)
    ids, labels = _batch(100, generator)
    torch.manual_seed(0)
    base = BertForSequenceClassification(tiny_config(), num_labels=3)
    grads = {}
    for name, scale in (("no scaler", None), ("GradScaler", 2.0 ** 12)):
        model = BertForSequenceClassification(tiny_config(), num_labels=3)
        model.load_state_dict(base.state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=scale is not None)
        fgm = FGM(model.bert.embeddings.word_embeddings, epsilon=0.5)
        # On a GPU, wrap both forward passes in torch.autocast("cuda", dtype=torch.float16); the scaler code is
        # the same. The CPU demo runs them in fp32, where the scaler's bookkeeping is what is being shown.
        scaler.scale(model(ids, labels=labels).loss).backward()  # 1. normal loss
        fgm.attack()
        scaler.scale(model(ids, labels=labels).loss).backward()  # 2. a NEW forward: its own graph, adds to .grad
        fgm.restore()
        scaler.unscale_(optimizer)  # once, after BOTH backward passes, before clipping
        grads[name] = [p.grad.clone() for p in model.parameters()]
        scaler.step(optimizer)
        scaler.update()
        show(f"{name}: loss scale", scaler.get_scale() if scaler.is_enabled() else 1.0)
    diff = max_abs_diff(grads["no scaler"], grads["GradScaler"])
    model = BertForSequenceClassification(tiny_config(), num_labels=3)
    loss = model(ids, labels=labels).loss
    loss.backward()
    second = error_line(lambda: loss.backward())  # what retain_graph is about: the SAME graph twice
    show("max |grad difference| with and without the scaler", diff)
    show("backward twice through ONE graph", second[:90])
    conclude("FGM's second loss comes from a new forward pass, so it has its own graph and needs no retain_graph; "
             "scale both losses with the same scaler, unscale_ once, clip, then one scaler.step and one update")
    return {"grad_diff": diff, "second_backward": second, "scale": scaler.get_scale()}


def focal_loss_demo(ctx: DemoContext) -> dict:
    title("焦点损失 focal loss: (1 - p)^γ down-weights easy examples; written in torch ops, autograd does the rest")
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.5, 0.3, 0.0], [0.0, 3.0, 0.0]], requires_grad=True)  # [N,C]
    labels = torch.tensor([0, 0, 2])  # easy, hard, wrong
    same_as_ce = abs(focal_loss(logits, labels, gamma=0).item() - F.cross_entropy(logits, labels).item())
    per_example = {}
    for gamma in (0.0, 2.0):
        for i, name in enumerate(("easy", "hard", "wrong")):
            per_example[(gamma, name)] = focal_loss(logits[i:i + 1], labels[i:i + 1], gamma).item()
    loss = focal_loss(logits, labels)
    loss.backward()
    grad_ok = logits.grad is not None and logits.grad.abs().sum().item() > 0
    broken = error_line(lambda: torch.tensor(loss.item()).backward())  # the course's "no autograd" error
    show("γ=0 vs cross_entropy: |difference|", same_as_ce)
    for name in ("easy", "hard", "wrong"):
        show(f"{name} example: loss at γ=0 / γ=2", f"{per_example[(0.0, name)]:.4f} / {per_example[(2.0, name)]:.4f}")
    show("gradient reaches the logits", grad_ok)
    show("a loss rebuilt from .item() (outside autograd)", broken[:90])
    conclude("focal loss = cross-entropy x (1 - p_true)^γ: the easy example's share shrinks most; it needs no custom "
             "backward, only torch operations (a value taken out with .item()/numpy has no graph to backpropagate)")
    return {"same_as_ce": same_as_ce, "per_example": per_example, "grad_ok": grad_ok, "broken": broken}


def freeze_encoder_demo(ctx: DemoContext) -> dict:
    title("冻结编码器 freezing the encoder: requires_grad=False, optimizer over what still trains")
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(hidden_dropout_prob=0.1), num_labels=3).train()
    total = sum(p.numel() for p in model.parameters())
    trainable = freeze_encoder(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    encoder_before = [p.clone() for p in model.bert.parameters()]
    head_before = model.classifier.weight.clone()
    ids, labels = _batch(100, torch.Generator().manual_seed(1))
    model(ids, labels=labels).loss.backward()
    optimizer.step()
    encoder_moved = max_abs_diff(encoder_before, list(model.bert.parameters()))
    head_moved = max_abs_diff(head_before, model.classifier.weight)
    no_grad = all(p.grad is None for p in model.bert.parameters())
    show("parameters: total / trainable after freezing", f"{total:,} / {trainable:,}")
    show("encoder: largest change after one step", encoder_moved)
    show("classifier: largest change after one step", head_moved)
    show("encoder parameters got no .grad at all", no_grad)
    conclude("frozen parameters get no gradient and do not move; the head still learns. Freezing does not switch "
             "dropout off: that is model.eval(), a separate switch. A frozen BERT is a fixed feature extractor: "
             "cheaper, but usually clearly worse than fine-tuning everything")
    return {"total": total, "trainable": trainable, "encoder_moved": encoder_moved, "head_moved": head_moved,
            "no_grad": no_grad}

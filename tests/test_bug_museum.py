"""The bug museum: real bugs from well-known BERT repositories and tutorials, reproduced, next to minibert doing
the same job right. Each test first shows the bug happening (so the exhibit stays honest: if a torch change ever
made the bug vanish, the test would say so), then checks minibert on the same case.

One-line stories and sources are in docs/notes.md ("The bug museum"). Everything runs on the CPU in seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from minibert import IGNORE_INDEX, BertForMaskedLM, BertForPreTraining, BertModel
from minibert.checkpoint import CheckpointError, load_pretrained, minibert_to_hf
from minibert.layers import LayerNorm
from minibert.training.accumulation import count_predictions, loss_weight
from minibert.training.io import atomic_save_safetensors
from minibert.training.optim import build_adamw, param_groups


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def test_nsp_loss_with_ignore_index_0_drops_class_0():
    """codertimo/BERT-pytorch used nn.NLLLoss(ignore_index=0) for NSP too, where 0 (IsNext/NotNext) is a real class."""
    torch.manual_seed(0)
    logits = torch.randn(8, 2)  # [B,2]
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 1, 0])
    buggy = F.nll_loss(logits.log_softmax(-1), labels, ignore_index=0)
    only_class_1 = F.nll_loss(logits[labels == 1].log_softmax(-1), labels[labels == 1])
    assert torch.isclose(buggy, only_class_1)  # the bug: class-0 examples contribute nothing
    assert torch.isnan(F.nll_loss(logits.log_softmax(-1), torch.zeros(8, dtype=torch.long), ignore_index=0))
    # minibert: every example counts, and an all-class-0 batch still trains the NSP head.
    model = BertForPreTraining(tiny_config())
    ids = torch.randint(5, 97, (8, 10))
    out = model(ids, next_sentence_label=torch.zeros(8, dtype=torch.long))
    assert torch.isclose(out.loss, F.cross_entropy(out.nsp_logits, torch.zeros(8, dtype=torch.long)))
    out.loss.backward()
    assert model.nsp_head.weight.grad.abs().sum() > 0


def test_weight_decay_exclusion_that_matches_nothing():
    """The copy-pasted no_decay = ["bias", "LayerNorm.weight"] rule, compared against FULL names (== instead of
    `in`) matches nothing; as a substring rule it still misses norms named differently (HF issue #16908)."""
    model = BertForMaskedLM(tiny_config())
    names = [n for n, _ in model.named_parameters()]
    no_decay = ["bias", "LayerNorm.weight"]
    assert [n for n in names if n in no_decay] == []  # exact comparison: everything decays
    substring_missed = [n for n in names if n.endswith("norm.weight") and not any(p in n for p in no_decay)]
    assert substring_missed  # ours are layer_norm/attention_norm/ffn_norm: the substring rule decays their gamma
    # minibert decides by module type: every LayerNorm parameter and every bias gets 0, every matrix decays.
    decay_of = {n: g["weight_decay"] for g in param_groups(model, lr=1e-4, weight_decay=0.01)
                for n in g["param_names"]}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            exempt = isinstance(module, LayerNorm) or param_name == "bias"
            assert decay_of[full] == (0.0 if exempt else 0.01), full


def test_mlm_loss_averaged_over_padded_prediction_slots():
    """pytorchic-bert (issue #24) and d2l's PyTorch BERT pretraining (d2l-en #2582) average the MLM loss over a
    fixed number of prediction slots, padding included, so the loss depends on max_predictions, not the data."""
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config())
    ids = torch.randint(5, 97, (2, 16))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[1, [2]] = ids[1, [2]]  # M = 3 real predictions
    out = model(ids, labels=labels)
    per_token = F.cross_entropy(out.logits, labels[labels != IGNORE_INDEX], reduction="none")  # [M]
    for slots in (5, 20):  # max_predictions_per_seq, padded with weight 0
        padded = torch.zeros(slots)
        padded[:3] = per_token
        weights = torch.zeros(slots)
        weights[:3] = 1
        buggy = (padded * weights).mean()
        assert torch.isclose(buggy, per_token.sum() / slots)  # diluted by the padding slots
    assert torch.isclose(out.loss, per_token.mean()) and out.num_predictions == 3  # minibert: the mean over M


def test_adam_without_bias_correction():
    """google-research/bert's AdamWeightDecayOptimizer and pytorch-pretrained-bert's BertAdam skip Adam's bias
    correction (HF issue #420); Zhang et al. 2021 and Mosbach et al. 2021 tie it to unstable few-sample fine-tuning."""
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-6
    uncorrected_step1 = lr * (1 - b1) * 1.0 / (math.sqrt((1 - b2) * 1.0) + eps)  # m / sqrt(v) at t=1, g=1
    assert uncorrected_step1 > 3 * lr  # the bug: the first step is ~3.16x the learning rate
    w = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_adamw([{"params": [w], "lr": lr, "weight_decay": 0.0}], betas=(b1, b2), eps=eps)
    for _ in range(3):
        before = w.item()
        w.grad = torch.ones(1)
        optimizer.step()
        assert math.isclose(abs(w.item() - before), lr, rel_tol=1e-3)  # minibert: every step is ~lr


def test_random_mlm_replacements_never_draw_special_tokens():
    """google-research/bert's create_pretraining_data and HF's DataCollatorForLanguageModeling draw the 10% random
    replacements from the whole vocabulary, specials included (HF issue #15342)."""
    from pretrain.masking import DynamicMasking

    vocab_size, specials = 40, [0, 1, 2, 3, 4]
    generator = torch.Generator().manual_seed(0)
    naive = torch.randint(vocab_size, (50_000,), generator=generator)
    assert torch.isin(naive, torch.tensor(specials)).any()  # the bug: [PAD]/[CLS]/[SEP]/[MASK] get drawn
    masking = DynamicMasking(vocab_size, specials, mask_token_id=4)
    ids = torch.randint(5, vocab_size, (400, 64), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    masked, labels = masking(ids, generator)
    replaced_randomly = (labels != IGNORE_INDEX) & (masked != ids) & (masked != 4)
    assert replaced_randomly.sum() > 200  # ~10% of 15% of 24,800 real tokens
    assert not torch.isin(masked[replaced_randomly], torch.tensor(specials)).any()
    assert (labels[:, 0] == IGNORE_INDEX).all() and (labels[:, -1] == IGNORE_INDEX).all()  # specials never chosen


def test_attention_mask_constant_in_fp16():
    """Honest version of "-10000 overflows in fp16": it does NOT (fp16 max is 65504). What fails is -1e9
    (codertimo/BERT-pytorch's masked_fill(mask == 0, -1e9); pytorch/benchmark #794, fairseq #3575) and finfo.min
    ADDED to another negative number (HF PR #17306): both reach -inf, and a row with no visible key becomes NaN."""
    fp16 = torch.float16
    scores = torch.tensor([[2.0, -3.0, 1.0, 0.5]], dtype=fp16)  # [1,T] a query whose keys are ALL padding
    assert torch.tensor(-1e4).to(fp16).item() == -1e4  # -10000 fits ...
    assert torch.isfinite((scores - 1e4).softmax(-1)).all()  # ... and gives no NaN
    assert torch.tensor(-1e9).to(fp16).item() == -math.inf
    with pytest.raises(RuntimeError, match="overflow"):
        scores.masked_fill(torch.ones_like(scores, dtype=torch.bool), -1e9)
    fmin = torch.finfo(fp16).min
    assert torch.isnan((scores + fmin + fmin).softmax(-1)).all()  # two additive masks: -inf, then NaN
    # minibert replaces masked scores with finfo(dtype).min (never adds): an all-padding row stays finite in fp16.
    model = BertModel(tiny_config()).eval().to(fp16)
    ids = torch.randint(5, 97, (2, 6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    for output_attentions in (False, True):  # fast SDPA path and reference path
        out = model(ids, attention_mask=mask, output_attentions=output_attentions).last_hidden_state
        assert torch.isfinite(out).all()


def test_vocab_size_mismatch_is_caught_before_it_becomes_nan(tmp_path):
    """A vocab.txt larger than config.vocab_size: TF on GPU returns zeros / NaN loss instead of an error
    (tensor2tensor #574, BERT pretraining); torch gives an IndexError on CPU and a device-side assert on GPU."""
    config = tiny_config()
    ids = torch.randint(5, 97, (2, 8))
    ids[0, 3] = 120  # an id from the bigger vocab
    with pytest.raises(IndexError):
        torch.nn.Embedding(config.vocab_size, 8)(ids)  # raw torch on CPU: no hint about the vocab
    with pytest.raises(ValueError, match=r"input_ids contains 120, outside \[0, vocab_size=97\)"):
        BertModel(config)(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[1, 2] = 120  # a masked position whose ORIGINAL id was out of range
    with pytest.raises(ValueError, match="vocab_size=97"):
        BertForMaskedLM(config)(ids.clamp(max=96), labels=labels)
    # At load time: config, weights and vocab.txt must agree, and the error says which one is the odd one out.
    folder = tmp_path / "ckpt"
    folder.mkdir()
    atomic_save_safetensors(BertModel(config).state_dict(), folder / "model.safetensors")
    config.to_json(folder / "config.json")
    (folder / "vocab.txt").write_text("\n".join(f"t{i}" for i in range(120)) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="vocab size mismatch"):
        load_pretrained(BertModel, folder)


@pytest.mark.parametrize("drift", ["gamma_beta", "no_prefix"])
def test_missing_bert_prefix_or_gamma_beta_leaves_nothing_untrained(tmp_path, drift):
    """Old pytorch-pretrained-bert files name LayerNorm gamma/beta; BertModel files lack the `bert.` prefix. Loading
    them with load_state_dict(strict=False) silently leaves those weights at init (e.g. SpanABSA #3: "Weights not
    initialized from pretrained model: bert.embeddings.LayerNorm.gamma ...")."""
    torch.manual_seed(0)
    config = tiny_config()
    trained = BertForMaskedLM(config)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)  # trained LayerNorms are no longer (1, 0)
    today = minibert_to_hf(trained.state_dict(), config.num_hidden_layers)
    old = {}
    for name, tensor in today.items():
        if drift == "gamma_beta":
            name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        else:
            name = name.removeprefix("bert.")
        old[name] = tensor
    not_loaded_by_strict_false = set(today) - set(old)
    assert not_loaded_by_strict_false  # the bug's precondition: the names really differ
    if drift == "gamma_beta":
        assert all("LayerNorm" in n for n in not_loaded_by_strict_false)
    atomic_save_safetensors(old, tmp_path / "model.safetensors")
    config.to_json(tmp_path / "config.json")
    loaded = load_pretrained(BertForMaskedLM, tmp_path)
    for (name, got), want in zip(loaded.model.state_dict().items(), trained.state_dict().values()):
        assert torch.equal(got, want), name
    assert loaded.report.fresh == [] and loaded.report.num_source_tensors == len(old)


def test_gradient_accumulation_that_divides_by_the_step_count():
    """HF transformers' Trainer averaged per-micro-batch MEAN losses until late 2024 (PR #34191, "Fixing gradient
    accumulation" on the HF blog): wrong whenever micro-batches hold different numbers of predicted tokens."""
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config())
    ids = torch.randint(5, 97, (4, 12))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 1] = ids[0, 1]  # micro-batch A (rows 0-1): 1 + 1 predictions
    labels[1, 2] = ids[1, 2]
    labels[2:, 1:11] = ids[2:, 1:11]  # micro-batch B (rows 2-3): 20 predictions
    model(ids, labels=labels).loss.backward()
    reference = [p.grad.clone() for p in model.parameters()]
    micro = [(ids[:2], labels[:2]), (ids[2:], labels[2:])]
    counts = [count_predictions(lab) for _, lab in micro]
    results = {}
    for name in ("divide by steps", "minibert loss_weight"):
        model.zero_grad()
        for k, (x, y) in enumerate(micro):
            weight = 1 / len(micro) if name == "divide by steps" else loss_weight(counts[k], sum(counts))
            (model(x, labels=y).loss * weight).backward()
        results[name] = max((p.grad - r).abs().max().item() for p, r in zip(model.parameters(), reference))
    assert results["minibert loss_weight"] < 1e-6
    assert results["divide by steps"] > 1000 * results["minibert loss_weight"]


def test_layer_norm_with_unbiased_std_and_eps_outside_the_root():
    """The Annotated Transformer's LayerNorm (copied by many BERT ports, e.g. codertimo/BERT-pytorch) computes
    (x - mean) / (x.std() + eps): unbiased std, eps outside the root. BERT checkpoints expect the biased variance
    with eps inside, so such a model cannot reproduce a checkpoint's outputs."""
    torch.manual_seed(0)
    x = torch.randn(4, 32) * 2 + 1  # [4,H]
    annotated = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6)
    ours = LayerNorm(32, 1e-12)(x)
    assert (ours - annotated).abs().max() > 1e-2  # the bug: a ~1.6% scale error at H=32
    assert torch.allclose(ours, F.layer_norm(x, (32,), eps=1e-12), atol=1e-5)

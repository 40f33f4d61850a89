"""Task heads (minibert/heads.py, minibert/globalpointer.py): RoPE's relative-position property, GlobalPointer
masking, Su's multilabel cross-entropy against the naive formula, and the label checks."""

import math

import pytest
import torch

from conftest import tiny_config
from minibert.globalpointer import (MASKED_SCORE, GlobalPointer, multilabel_categorical_crossentropy,
                                    rotary_position_embedding)
from minibert.heads import (BertForGlobalPointerNER, BertForSequenceClassification, BertForTokenClassification,
                            mean_pool)


def test_rope_dot_products_depend_only_on_the_offset():
    q, k = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    T = 12
    rq = rotary_position_embedding(q.expand(1, T, 8))[0]  # [T,D] the same query at every position
    rk = rotary_position_embedding(k.expand(1, T, 8))[0]
    scores = rq @ rk.T  # [T,T]
    for offset in range(-4, 5):
        diagonal = torch.diagonal(scores, offset=offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal))
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])  # offset matters
    # rotations keep lengths
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(T))


def test_globalpointer_span_scores_for_identical_content_depend_only_on_offset():
    pointer = GlobalPointer(hidden_size=16, num_types=3, head_size=8).double()
    hidden = torch.randn(16, dtype=torch.float64).expand(2, 10, 16)  # [B,T,H] same vector everywhere
    scores = pointer(hidden)  # [B,C,T,T]
    for offset in range(0, 6):
        diagonal = torch.diagonal(scores, offset=offset, dim1=-2, dim2=-1)  # [B,C,T-offset]
        torch.testing.assert_close(diagonal, diagonal[..., :1].expand_as(diagonal))


def test_globalpointer_masks_the_lower_triangle_and_padding():
    pointer = GlobalPointer(hidden_size=16, num_types=2, head_size=8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    scores = pointer(torch.randn(2, 5, 16), mask)  # [2,2,5,5]
    lower = torch.ones(5, 5, dtype=torch.bool).tril(-1)
    assert (scores[:, :, lower] == MASKED_SCORE).all()  # end before start: never a span
    assert (scores[:, :, ~lower] != MASKED_SCORE)[0].all()  # first example: every upper-triangle span is live
    assert (scores[1, :, 3:, :] == MASKED_SCORE).all() and (scores[1, :, :, 3:] == MASKED_SCORE).all()
    assert (scores[1, :, :3, :3][:, ~lower[:3, :3]] != MASKED_SCORE).all()


def test_globalpointer_span_scores_stay_fp32_under_autocast():
    """Mixed-precision fine-tuning runs the head under autocast: only the input projection may run in bf16; the span
    scores that are compared with 0 are computed from it in fp32 (bf16 keeps ~3 significant digits)."""
    torch.manual_seed(0)
    pointer = GlobalPointer(hidden_size=32, num_types=2, head_size=16)
    hidden = torch.randn(2, 12, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = pointer(hidden)  # [B,C,T,T]
        projected = pointer.query_key(hidden)  # what autocast gives the head: bf16
    assert projected.dtype == torch.bfloat16 and scores.dtype == torch.float32
    exact = GlobalPointer(hidden_size=32, num_types=2, head_size=16)
    exact.load_state_dict(pointer.state_dict())
    exact.query_key = torch.nn.Identity()  # feed the same bf16 projection through the fp32 path
    expected = exact(projected.float())
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)

def naive_multilabel_ce(scores, targets):
    """log(1 + Σ_neg e^s) + log(1 + Σ_pos e^-s), written with Python sums."""
    losses = []
    for row_scores, row_targets in zip(scores.tolist(), targets.tolist()):
        neg = sum(math.exp(s) for s, t in zip(row_scores, row_targets) if t == 0)
        pos = sum(math.exp(-s) for s, t in zip(row_scores, row_targets) if t == 1)
        losses.append(math.log1p(neg) + math.log1p(pos))
    return torch.tensor(losses, dtype=torch.float64)


def test_multilabel_categorical_crossentropy_matches_the_naive_formula():
    scores = torch.randn(6, 9, dtype=torch.float64) * 3
    targets = (torch.rand(6, 9) < 0.3).double()
    targets[0] = 0  # a row with no positive at all
    torch.testing.assert_close(multilabel_categorical_crossentropy(scores, targets), naive_multilabel_ce(scores, targets))
    masked = scores.clone()
    masked[:, -3:] = MASKED_SCORE  # masked candidates contribute nothing
    targets[:, -3:] = 0
    torch.testing.assert_close(multilabel_categorical_crossentropy(masked, targets),
                               naive_multilabel_ce(scores[:, :-3], targets[:, :-3]))


def test_globalpointer_ner_learns_a_span():
    config = tiny_config()
    model = BertForGlobalPointerNER(config, num_labels=2, head_size=8)
    ids = torch.randint(5, config.vocab_size, (4, 9))
    labels = torch.zeros(4, 2, 9, 9)
    labels[:, 1, 2, 4] = 1  # type 1 spans tokens 2..4 in every example
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = model(ids, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = first if first is not None else out.loss.item()
    assert out.num_loss_terms == 8 and out.loss.item() < first / 4
    predicted = (model(ids).logits > 0).nonzero().tolist()
    assert predicted == [[b, 1, 2, 4] for b in range(4)]


def test_finetune_dropout_reaches_every_head():
    """--dropout once reached the softmax heads only: GlobalPointer kept the encoder's (0 for make pretrain's)."""
    from finetune.config import FinetuneConfig
    from finetune.tasks import TaskSpec, model_class

    config = tiny_config()
    for kind in ("class", "tags", "spans"):
        spec = TaskSpec("ner" if kind != "class" else "cls", "bio", kind, 3, ["a", "b", "c"], "f1", ("classifier",))
        head, arguments = model_class(FinetuneConfig(dropout=0.3), spec)
        assert head(config, **arguments).dropout.p == 0.3, head.__name__


@pytest.mark.parametrize("representation", ["cls", "pooler", "mean"])
def test_sequence_classification_shapes_and_loss(representation):
    config = tiny_config()
    model = BertForSequenceClassification(config, num_labels=3, representation=representation).eval()
    ids = torch.randint(5, config.vocab_size, (4, 7))
    labels = torch.tensor([0, 2, 1, 2])
    out = model(ids, labels=labels)
    assert out.logits.shape == (4, 3) and out.num_loss_terms == 4
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert (model.bert.pooler is not None) == (representation == "pooler")


def test_mean_pooling_ignores_padding():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pool(hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1].mean(0))


def test_multi_label_uses_bce_over_every_class():
    config = tiny_config()
    model = BertForSequenceClassification(config, num_labels=4, multi_label=True).eval()
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    out = model(torch.randint(5, config.vocab_size, (2, 6)), labels=labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    torch.testing.assert_close(out.loss, expected)
    assert out.num_loss_terms == 8


def test_bad_class_labels_are_one_clear_error_not_a_silent_ignore():
    config = tiny_config()
    model = BertForSequenceClassification(config, num_labels=3)
    ids = torch.randint(5, config.vocab_size, (2, 5))
    with pytest.raises(ValueError, match=r"contain -100.*\[0, num_labels=3\)"):
        model(ids, labels=torch.tensor([1, -100]))  # torch would silently drop this example
    with pytest.raises(ValueError, match="contain 39"):
        model(ids, labels=torch.tensor([39, 0]))  # torch: "index 39 is out of bounds"


def test_token_classification_scores_only_labelled_tokens():
    config = tiny_config()
    model = BertForTokenClassification(config, num_labels=5).eval()
    ids = torch.randint(5, config.vocab_size, (2, 6))
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100, 4, -100, -100, -100, -100]])
    out = model(ids, labels=labels)
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    assert int(out.num_loss_terms) == 4
    with pytest.raises(ValueError, match="contain 5"):
        model(ids, labels=labels.masked_fill(labels == 4, 5))


def test_span_labels_the_loss_cannot_learn_from_are_refused():
    # A positive on a masked span sits on the score -1e12: its term would swamp the row and starve the real spans.
    config = tiny_config()
    model = BertForGlobalPointerNER(config, num_labels=2).eval()
    ids, mask = torch.randint(5, config.vocab_size, (1, 6)), torch.tensor([[1, 1, 1, 1, 0, 0]])
    good = torch.zeros(1, 2, 6, 6)
    good[0, 1, 1, 2] = 1
    assert math.isfinite(model(ids, attention_mask=mask, labels=good).loss.item())
    backwards, on_padding, two = good.clone(), good.clone(), good.clone()
    backwards[0, 0, 3, 1] = 1
    on_padding[0, 0, 2, 4] = 1
    two[0, 1, 1, 2] = 2
    with pytest.raises(ValueError, match=r"span \(start 3, end 1\) of type 0 in example 0, which has end < start"):
        model(ids, attention_mask=mask, labels=backwards)
    with pytest.raises(ValueError, match=r"span \(start 2, end 4\) .* an end on padding"):
        model(ids, attention_mask=mask, labels=on_padding)
    with pytest.raises(ValueError, match="contain 2.0; they must be 0/1"):
        model(ids, attention_mask=mask, labels=two)


def test_label_shapes_and_multi_hot_values_are_checked_before_the_loss():
    config = tiny_config()
    ids = torch.randint(5, config.vocab_size, (2, 5))
    classifier = BertForSequenceClassification(config, num_labels=3)
    with pytest.raises(ValueError, match=r"shape \(2, 1\) .* expected \[batch\] = \(2,\)"):
        classifier(ids, labels=torch.tensor([[1], [0]]))  # torch: "0D or 1D target tensor expected"
    multi = BertForSequenceClassification(config, num_labels=3, multi_label=True)
    with pytest.raises(ValueError, match=r"contain 2.0; they must be in \[0, 1\]"):
        multi(ids, labels=torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]]))  # BCE would train toward 2 silently
    tagger = BertForTokenClassification(config, num_labels=3)
    with pytest.raises(ValueError, match=r"shape \(5, 2\) .* expected the input_ids shape \(2, 5\)"):
        tagger(ids, labels=torch.zeros(5, 2, dtype=torch.long))  # same numel: torch would accept it

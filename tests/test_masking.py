"""Statistics of dynamic MLM masking (pretrain/masking.py): rates, 80/10/10, specials, ≥1 prediction, determinism.

Tolerances are 5 binomial standard deviations: a correct implementation fails about once in 3 million runs, a
wrong rate (e.g. 0.15 → 0.12, or 80/10/10 → 90/0/10) fails every time at these sample sizes.
"""
import math

import pytest
import torch

from pretrain.masking import DynamicMasking

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 500


def make_rows(rows=512, length=128, generator_seed=0):
    """[CLS] real tokens (some [UNK]) [SEP] [PAD]...: every row has a different real length."""
    g = torch.Generator().manual_seed(generator_seed)
    ids = torch.randint(5, VOCAB, (rows, length), generator=g)                      # [B,T]
    ids[torch.rand(rows, length, generator=g) < 0.02] = UNK
    real_length = torch.randint(length // 2, length - 1, (rows,), generator=g)      # [B]
    positions = torch.arange(length)[None, :]
    ids[:, 0] = CLS
    ids[positions == real_length[:, None] + 1] = SEP
    ids[positions > real_length[:, None] + 1] = PAD
    return ids


def within(observed, expected_rate, trials, sigmas=5.0):
    std = math.sqrt(expected_rate * (1 - expected_rate) / trials)
    return abs(observed - expected_rate) <= sigmas * std


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_selection_rate_matches_mask_rate(rate):
    ids = make_rows()
    masking = DynamicMasking(VOCAB, SPECIALS, MASK, mask_rate=rate)
    _, labels = masking(ids, torch.Generator().manual_seed(1))
    maskable = (ids >= 5).sum().item()
    selected = (labels != -100).sum().item()
    # Rows are long (≥ 64 real tokens), so the "≥1 per row" rule almost never fires and cannot bias the rate.
    assert within(selected / maskable, rate, maskable), (selected / maskable, rate)


def test_80_10_10_split():
    ids = make_rows(rows=1024)
    masking = DynamicMasking(VOCAB, SPECIALS, MASK, mask_rate=0.3)
    masked, labels = masking(ids, torch.Generator().manual_seed(2))
    selected = labels != -100
    n = selected.sum().item()
    to_mask = (masked == MASK) & selected
    changed_to_random = (masked != ids) & (masked != MASK) & selected
    unchanged = (masked == ids) & selected
    # A random replacement equals the original with probability 1/(real vocab), so "unchanged" gains 0.1/495.
    p_same = 0.1 / (VOCAB - len(SPECIALS))
    assert within(to_mask.sum().item() / n, 0.8, n)
    assert within(changed_to_random.sum().item() / n, 0.1 - p_same, n)
    assert within(unchanged.sum().item() / n, 0.1 + p_same, n)


def test_specials_never_selected_and_never_inserted():
    ids = make_rows()
    masking = DynamicMasking(VOCAB, SPECIALS, MASK, mask_rate=0.5)
    masked, labels = masking(ids, torch.Generator().manual_seed(3))
    special = (ids < 5)
    assert special.sum() > 0
    assert (labels[special] == -100).all(), "a special token ([PAD]/[UNK]/[CLS]/[SEP]) was selected"
    assert (masked[special] == ids[special]).all(), "a special position was altered"
    # Random replacements: positions that changed to something other than [MASK] hold real tokens only.
    replaced = (masked != ids) & (masked != MASK)
    assert replaced.sum() > 100
    assert (masked[replaced] >= 5).all(), "a random replacement drew a special id"
    # Labels carry the ORIGINAL id; positions not selected are untouched.
    selected = labels != -100
    assert (labels[selected] == ids[selected]).all()
    assert (masked[~selected] == ids[~selected]).all()


def test_every_row_gets_a_prediction_even_when_short():
    ids = torch.full((2000, 16), PAD)
    ids[:, 0], ids[:, 2] = CLS, SEP
    ids[:, 1] = torch.randint(5, VOCAB, (2000,))                                    # one real token per row
    ids[::2, 2], ids[::2, 3], ids[::2, 4] = 7, 8, SEP                              # half the rows: three
    masking = DynamicMasking(VOCAB, SPECIALS, MASK, mask_rate=0.01)                  # would leave ~97% empty
    _, labels = masking(ids, torch.Generator().manual_seed(4))
    per_row = (labels != -100).sum(dim=1)
    assert (per_row >= 1).all()
    assert (labels[:, 0] == -100).all() and (labels[ids == PAD] == -100).all()
    # The forced position is a uniformly random maskable one: in 3-token rows each of the 3 is hit.
    forced_positions = (labels[::2] != -100).float().argmax(dim=1)
    assert set(forced_positions.tolist()) == {1, 2, 3}


def test_deterministic_given_generator_seed():
    ids = make_rows(rows=64)
    masking = DynamicMasking(VOCAB, SPECIALS, MASK)
    first = masking(ids, torch.Generator().manual_seed(5))
    again = masking(ids, torch.Generator().manual_seed(5))
    other = masking(ids, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    # A generator restored from a saved state continues with the same masks (what resume relies on).
    g = torch.Generator().manual_seed(7)
    masking(ids, g)
    state = g.get_state()
    expected = masking(ids, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(masking(ids, g2)[1], expected[1])


def test_a_row_with_no_real_token_gets_no_prediction_and_the_others_keep_theirs():
    # a document the vocab does not cover (all [UNK]) must not stop the run: it simply has nothing to predict
    masking = DynamicMasking(VOCAB, SPECIALS, MASK)
    ids = torch.tensor([[CLS, 7, 8, 9, SEP], [CLS, UNK, UNK, UNK, SEP], [CLS, 10, PAD, PAD, PAD]])
    for seed in range(20):
        masked, labels = masking(ids, torch.Generator().manual_seed(seed))
        assert (labels[1] == -100).all() and torch.equal(masked[1], ids[1])
        assert (labels[[0, 2]] != -100).any(dim=1).all()  # the one prediction every other row gets


def test_clear_errors():
    masking = DynamicMasking(VOCAB, SPECIALS, MASK)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="outside the vocab"):
        masking(torch.tensor([[CLS, VOCAB, SEP]]), g)
    with pytest.raises(ValueError, match="torch.long"):
        masking(torch.tensor([[2.0, 7.0]]), g)
    with pytest.raises(ValueError, match="mask_rate"):
        DynamicMasking(VOCAB, SPECIALS, MASK, mask_rate=1.5)
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        DynamicMasking(VOCAB, [PAD, CLS, SEP], MASK)
    with pytest.raises(ValueError, match=r"outside the vocab \[0, "):  # a special id == V: one past the end
        DynamicMasking(VOCAB, [PAD, CLS, SEP, MASK, VOCAB], MASK)

"""Hierarchical position embeddings (minibert/positions.py): exact below the trained limit, Su's formula above it, and the input-length limit follows the new table."""

import pytest
import torch

from conftest import tiny_config
from minibert import BertModel
from minibert.positions import HierarchicalPositionEmbedding, extend_positions_hierarchically, hierarchical_table


def test_below_the_trained_limit_the_table_is_reproduced_bit_for_bit():
    table = torch.randn(64, 32)  # [P,H]
    extended = HierarchicalPositionEmbedding(table, new_max=64 * 10)
    rows = extended(torch.arange(64))  # [P,H]
    assert torch.equal(rows, table)  # exact, not allclose


def test_above_the_limit_it_matches_sus_formula_with_u():
    table = torch.randn(16, 8, dtype=torch.float64)
    extended = HierarchicalPositionEmbedding(table, new_max=200, alpha=0.4)
    expected = hierarchical_table(table, 200, alpha=0.4)  # α u[i//P] + (1-α) u[i%P]
    torch.testing.assert_close(extended(torch.arange(200)), expected, rtol=0, atol=1e-12)
    # and the reference formula itself reproduces the trained rows (up to rounding)
    torch.testing.assert_close(expected[:16], table, rtol=0, atol=1e-12)
    # Su's formula written out here, independently of positions.py, for a few positions past P = 16:
    # u_k = (p_k - α p_0) / (1 - α), and position q·P + r gets α u_q + (1 - α) u_r.
    for position in (16, 37, 199):
        q, r = divmod(position, 16)
        u_q, u_r = ((table[k] - 0.4 * table[0]) / 0.6 for k in (q, r))
        torch.testing.assert_close(extended(torch.tensor([position]))[0], 0.4 * u_q + 0.6 * u_r, rtol=0, atol=1e-12)
    # position P + j is position j shifted by the same block offset for every j
    offsets = extended(torch.arange(16, 32)) - table  # [P,H]
    torch.testing.assert_close(offsets, offsets[:1].expand_as(offsets))


def test_extended_model_reads_longer_inputs_and_keeps_short_outputs():
    config = tiny_config()  # P = 64
    model = BertModel(config).eval()
    short = torch.randint(5, config.vocab_size, (2, 40))
    before = model(short).last_hidden_state
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.randint(5, config.vocab_size, (1, 100)))
    extend_positions_hierarchically(model, new_max=256)
    assert model.embeddings.max_positions == 256
    assert torch.equal(model(short).last_hidden_state, before)  # nothing changes for short inputs
    long_out = model(torch.randint(5, config.vocab_size, (1, 200))).last_hidden_state
    with pytest.raises(ValueError, match="> 256, the limit of the hierarchical position table; .*at most 4096"):
        model(torch.randint(5, config.vocab_size, (1, 300)))  # names the extended limit, not the config's 64
    assert long_out.shape == (1, 200, config.hidden_size) and torch.isfinite(long_out).all()
    # the state dict keeps the trained [P,H] shape, so a plain model can load it
    assert model.state_dict()["embeddings.position_embeddings.weight"].shape == (64, config.hidden_size)
    BertModel(config).load_state_dict(model.state_dict())


def test_limits_are_clear_errors():
    with pytest.raises(ValueError, match="P²"):
        HierarchicalPositionEmbedding(torch.randn(8, 4), new_max=65)
    with pytest.raises(ValueError, match="alpha"):
        HierarchicalPositionEmbedding(torch.randn(8, 4), new_max=16, alpha=1.0)


def test_alpha_one_half_would_make_the_two_digits_interchangeable():
    table = torch.randn(8, 4)
    symmetric = table[3] + table[1] - table[0]  # what α = 0.5 gives both position (1, 3) and position (3, 1)
    assert torch.allclose(hierarchical_table(table, 64, alpha=0.5)[1 * 8 + 3], symmetric)
    assert torch.allclose(hierarchical_table(table, 64, alpha=0.5)[3 * 8 + 1], symmetric)
    with pytest.raises(ValueError, match="not 0.5 .the two digits would be interchangeable"):
        HierarchicalPositionEmbedding(table, new_max=64, alpha=0.5)
    extended = HierarchicalPositionEmbedding(table, new_max=64)(torch.arange(64))  # α = 0.4: all distinct
    assert len({tuple(row.tolist()) for row in extended}) == 64


def test_gradients_reach_the_shared_trained_rows():
    extended = HierarchicalPositionEmbedding(torch.randn(8, 4), new_max=40)
    extended(torch.tensor([35])).sum().backward()  # 35 = 4·8 + 3: rows 3, 4 and 0 take part
    touched = extended.weight.grad.abs().sum(dim=1) > 0
    assert touched.tolist() == [True, False, False, True, True, False, False, False]

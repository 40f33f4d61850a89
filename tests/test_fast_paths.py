"""Every fast path in layers.py computes the same thing as the definition it replaces.

LayerNorm.forward calls torch's fused kernel for speed; LayerNorm.formula spells out the definition. Values AND
gradients must agree, also for inputs whose mean is far from 0 (the normalisation must subtract it)."""

from __future__ import annotations

import pytest
import torch

from minibert.layers import LayerNorm


# (scale, offset) of the input: plain; mean far from 0; variance so small that eps matters (inside vs outside
# the square root). Not both small scale and large offset: fp32 itself cannot resolve that input.
@pytest.mark.parametrize("scale, offset", [(2.0, 0.0), (2.0, 10.0), (0.01, 0.0)])
@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_fast_path_matches_formula_values_and_gradients(scale, offset, eps):
    norm = LayerNorm(64, eps)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
        norm.bias.normal_(0.0, 0.2)
    x = (torch.randn(3, 5, 64) * scale + offset).requires_grad_()
    upstream = torch.randn(3, 5, 64)

    fast = norm(x)
    (fast_x, fast_w, fast_b) = torch.autograd.grad(fast, (x, norm.weight, norm.bias), upstream)
    slow = norm.formula(x)
    (slow_x, slow_w, slow_b) = torch.autograd.grad(slow, (x, norm.weight, norm.bias), upstream)

    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_x, slow_x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_w, slow_w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast_b, slow_b, rtol=1e-5, atol=1e-5)


def test_layer_norm_formula_is_the_definition():
    """The reference itself: zero mean, unit (biased) variance before gamma/beta, in float64."""
    norm = LayerNorm(8, 1e-12).double()
    x = torch.randn(4, 8, dtype=torch.float64) * 3 + 7
    y = norm.formula(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-9, rtol=0)

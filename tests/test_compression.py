"""Compression probes: global magnitude pruning removes exactly the share asked for and
keeps it removed; k-bit fake quantisation leaves at most 2^k − 1 levels per output channel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.compression import prune_by_magnitude, quantize_weights
from robustlab.compression.weights import compressible_weights
from robustlab.errors import ConfigError


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_pruning_removes_the_smallest_share_over_the_whole_network(sparsity: float) -> None:
    model = small_net()
    before = torch.cat([w.detach().abs().flatten() for w in compressible_weights(model).values()])
    masks = prune_by_magnitude(model, sparsity)
    after = torch.cat([w.detach().flatten() for w in compressible_weights(model).values()])
    zeros = int((after == 0).sum())
    assert zeros == round(sparsity * after.numel())
    assert masks.sparsity == pytest.approx(zeros / after.numel())
    if zeros:  # every removed weight was no larger than every kept one
        assert before[after == 0].max() <= before[after != 0].min()
    assert model[0].bias.abs().min() > 0 or sparsity == 0  # biases are left alone


def test_masks_keep_pruned_weights_at_zero_after_training_steps() -> None:
    model = small_net()
    masks = prune_by_magnitude(model, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        loss = model(torch.rand(8, 1, 8, 8)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        masks.apply(model)
    for name, weight in compressible_weights(model).items():
        assert torch.all(weight[~masks.masks[name]] == 0)


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5])
def test_sparsity_outside_zero_one_is_refused(sparsity: float) -> None:
    with pytest.raises(ConfigError, match=r"sparsity must be in \[0, 1\)"):
        prune_by_magnitude(small_net(), sparsity)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantisation_leaves_at_most_2_to_the_k_minus_1_levels_per_channel(bits: int) -> None:
    model = small_net()
    original = {n: w.detach().clone() for n, w in compressible_weights(model).items()}
    quantize_weights(model, bits)
    for name, weight in compressible_weights(model).items():
        rows = weight.detach().flatten(1)
        for row, source in zip(rows, original[name].flatten(1), strict=True):
            assert len(torch.unique(row)) <= 2**bits - 1
            step = source.abs().max() / (2 ** (bits - 1) - 1)
            assert torch.all((row - source).abs() <= step / 2 + 1e-6)  # rounded to nearest


def test_sixteen_bits_changes_nearly_nothing_and_bad_bits_are_refused() -> None:
    model = small_net()
    x = torch.rand(4, 1, 8, 8)
    expected = model(x)
    quantize_weights(model, 16)
    assert torch.allclose(model(x), expected, atol=1e-3)
    with pytest.raises(ConfigError, match=r"bits must be an integer in 2\.\.16"):
        quantize_weights(model, 1)

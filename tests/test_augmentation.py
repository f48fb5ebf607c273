"""Training-time augmentation: each image is its own shifted (zero-filled) and possibly
mirrored copy, drawn the same way again for the same seed and batch, so resumes are exact."""

from __future__ import annotations

import torch

from robustlab.config import AugmentConfig
from robustlab.train.augmentation import augment_batch


def images() -> torch.Tensor:
    return torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1


def test_each_output_is_a_shift_of_its_input_with_zero_fill() -> None:
    x = images()
    out = augment_batch(x, AugmentConfig(crop_padding=2), seed=0, index=5)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], window) for window in windows)
    assert not torch.equal(out, x)  # 64 images all at offset (2, 2) would be a broken draw


def test_flip_mirrors_about_half_and_nothing_else() -> None:
    x = images()
    out = augment_batch(x, AugmentConfig(flip=True), seed=0, index=0)
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 16 <= sum(mirrored) <= 48


def test_the_same_seed_and_batch_give_the_same_draw_and_others_differ() -> None:
    x = images()
    config = AugmentConfig(crop_padding=4, flip=True)
    first = augment_batch(x, config, seed=3, index=7)
    assert torch.equal(first, augment_batch(x, config, seed=3, index=7))
    assert not torch.equal(first, augment_batch(x, config, seed=3, index=8))
    assert not torch.equal(first, augment_batch(x, config, seed=4, index=7))
    state = torch.get_rng_state()
    augment_batch(x, config, seed=3, index=7)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched


def test_no_augmentation_is_the_identity() -> None:
    x = images()
    assert torch.equal(augment_batch(x, AugmentConfig(), seed=0, index=0), x)

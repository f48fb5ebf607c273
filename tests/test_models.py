"""robustlab.models: registry, parameter counts, shapes, normalisation and option checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import (
    MODELS,
    Classifier,
    Normalize,
    build_model,
    count_multiply_adds,
    count_parameters,
    model_options,
)
from robustlab.registry import UnknownNameError

NAMES = [
    "convnet",
    "madry-mnist",
    "mlp",
    "preact-resnet",
    "preact-resnet18",
    "thesis-deep",
    "thesis-shallow",
    "wide-resnet",
]
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "preact-resnet": {"depth": 10, "width": 4},
    "preact-resnet18": {"width": 4},
    "wide-resnet": {"depth": 10, "widen": 1},
}
"""Options that keep the residual networks fast; the others are cheap at their defaults."""


def build(name: str, shape: tuple[int, int, int] = (1, 28, 28), **options: Any) -> Classifier:
    channels = shape[0]
    return build_model(
        name,
        input_shape=shape,
        num_classes=10,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        **options,
    )


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


# --- registry ------------------------------------------------------------------------------


def test_registry_lists_exactly_the_models() -> None:
    assert MODELS.names() == NAMES
    assert all(entry.description for entry in MODELS.entries())


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as caught:
        build("resnet-9000")
    message = str(caught.value)
    assert "'resnet-9000'" in message
    assert all(name in message for name in NAMES)


def test_model_options_lists_names_and_defaults() -> None:
    no_denoise = {"denoise": None, "denoise_after": None}
    assert model_options("convnet") == {"depth": 2, "width": 1.0, "dropout": True, **no_denoise}
    assert model_options("thesis-shallow") == {"dropout": True}
    assert model_options("mlp") == {"depth": 3, "width": 256, "dropout": 0.0}
    assert model_options("preact-resnet18") == {"width": 64, **no_denoise}
    assert model_options("wide-resnet") == {"depth": 28, "widen": 10, "dropout": 0.0, **no_denoise}


# --- parameter counts and the convnet family ------------------------------------------------


def test_thesis_shallow_has_the_keras_parameter_count() -> None:
    assert count_parameters(build("thesis-shallow")) == 1_199_882


def test_thesis_deep_parameter_count_by_hand() -> None:
    convs = (1 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64)
    assert convs == 320 + 18_496 + 36_928
    hidden = 64 * 11 * 11 * 128 + 128  # 28 → 26 → 24 → 22 → pool 11
    out = 128 * 10 + 10
    assert count_parameters(build("thesis-deep")) == convs + hidden + out == 1_048_394


def test_thesis_deep_multiply_adds_by_hand() -> None:
    """Valid 3×3 convs 28 → 26 → 24 → 22, pool to 11, FC 128, FC 10: the scheduler's cost."""
    convs = 26 * 26 * 32 * 9 * 1 + 24 * 24 * 64 * 9 * 32 + 22 * 22 * 64 * 9 * 64
    dense = 64 * 11 * 11 * 128 + 128 * 10
    model = build("thesis-deep")
    model.train()
    assert count_multiply_adds(model, (1, 28, 28)) == convs + dense
    assert model.training  # left as it was found
    assert count_multiply_adds(build("thesis-shallow"), (1, 28, 28)) < convs + dense


def test_madry_mnist_is_the_mnist_challenge_network() -> None:
    """5×5 'same' convs 32 and 64, two 2×2 pools (28 → 14 → 7), FC 1024, FC 10."""
    model = build("madry-mnist")
    convs = (1 * 25 * 32 + 32) + (32 * 25 * 64 + 64)
    hidden = 7 * 7 * 64 * 1024 + 1024
    assert count_parameters(model) == convs + hidden + 1024 * 10 + 10 == 3_274_634
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_dropout_option_removes_dropout_but_keeps_the_weights() -> None:
    with_dropout, without = build("thesis-shallow"), build("thesis-shallow", dropout=False)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout.modules()) == 2
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())
    assert shapes(with_dropout) == shapes(without)


@pytest.mark.parametrize(("depth", "thesis"), [(2, "thesis-shallow"), (3, "thesis-deep")])
def test_convnet_contains_the_thesis_models(depth: int, thesis: str) -> None:
    torch.manual_seed(0)
    family = build("convnet", depth=depth, width=1).eval()
    torch.manual_seed(0)
    original = build(thesis).eval()
    assert shapes(family) == shapes(original)
    assert count_parameters(family) == count_parameters(original)
    original_state = original.state_dict()
    for key, value in family.state_dict().items():
        assert torch.equal(value, original_state[key]), key
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(family(x), original(x))


def test_convnet_width_scales_channels_and_hidden_units() -> None:
    wide = shapes(build("convnet", width=2))
    assert wide["body.conv1.weight"] == (64, 1, 3, 3)
    assert wide["body.conv2.weight"] == (128, 64, 3, 3)
    assert wide["body.fc1.weight"] == (256, 128 * 12 * 12)
    assert wide["body.fc2.weight"] == (10, 256)
    narrow = shapes(build("convnet", depth=3, width=0.5))
    assert [narrow[f"body.conv{i}.weight"][0] for i in (1, 2, 3)] == [16, 32, 32]


def test_residual_network_parameter_counts() -> None:
    # The common PyTorch CIFAR PreAct ResNet-18 has 11,171,146 parameters; ours keeps the
    # paper's final BN before pooling, which adds 2 × 512.
    assert count_parameters(build("preact-resnet18", (3, 32, 32))) == 11_171_146 + 2 * 512
    same = build("preact-resnet", (3, 32, 32), depth=18, width=8)
    eighteen = build("preact-resnet18", (3, 32, 32), width=8)
    assert list(same.state_dict()) == list(eighteen.state_dict())
    counts = [
        count_parameters(build("preact-resnet", (3, 32, 32), depth=depth, width=8))
        for depth in (10, 18, 26, 34)
    ]
    assert counts == sorted(counts) and len(set(counts)) == 4
    for depth, widen in [(10, 1), (16, 2)]:
        model = build("wide-resnet", (3, 32, 32), depth=depth, widen=widen)
        assert count_parameters(model) == wide_resnet_count(depth, widen, 3, 10)
    assert wide_resnet_count(28, 10, 3, 10) == 36_479_194  # the published WRN-28-10 count


def wide_resnet_count(depth: int, widen: int, channels: int, classes: int) -> int:
    """WRN parameters by hand: bias-free convs, BN (2 per channel), linear with bias."""
    blocks = (depth - 4) // 6
    total = channels * 9 * 16
    in_channels = 16
    for out_channels in (16 * widen, 32 * widen, 64 * widen):
        for _ in range(blocks):
            total += 2 * in_channels + in_channels * 9 * out_channels
            total += 2 * out_channels + out_channels * 9 * out_channels
            if in_channels != out_channels:
                total += in_channels * out_channels
            in_channels = out_channels
    return total + 2 * in_channels + in_channels * classes + classes


def test_count_parameters_trainable_only() -> None:
    model = build("mlp", depth=1, width=4)
    total = count_parameters(model)
    assert total == (784 * 4 + 4) + (4 * 10 + 10)
    model.body.fc1.requires_grad_(False)
    assert count_parameters(model) == 4 * 10 + 10
    assert count_parameters(model, trainable_only=False) == total


# --- forward shapes ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name: str, shape: tuple[int, int, int]) -> None:
    model = build(name, shape, **SMALL_OPTIONS.get(name, {}))
    logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_forward_backward_in_training_mode() -> None:
    model = build("wide-resnet", (3, 16, 16), depth=10, widen=1, dropout=0.3).train()
    model(torch.rand(3, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# --- normalisation -------------------------------------------------------------------------


def test_normalize_is_per_channel() -> None:
    normalize = Normalize([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    x = torch.rand(2, 3, 4, 4)
    expected = torch.stack(
        [(x[:, c] - m) / s for c, (m, s) in enumerate([(0.1, 0.5), (0.2, 0.25), (0.3, 2.0)])],
        dim=1,
    )
    assert torch.allclose(normalize(x), expected)


def test_normalize_accepts_arrays_and_tensors() -> None:
    from_array = Normalize(np.array([0.1, 0.2]), np.array([0.5, 0.5]))
    from_tensor = Normalize(torch.tensor([0.1, 0.2]), torch.tensor([0.5, 0.5]))
    assert torch.equal(from_array.mean, from_tensor.mean)
    assert from_array.mean.shape == (2, 1, 1) and from_array.mean.dtype == torch.float32


def test_normalize_is_the_first_child_and_saved() -> None:
    model = build("mlp", (3, 8, 8))
    name, first = next(iter(model.named_children()))
    assert name == "normalize" and isinstance(first, Normalize)
    state = model.state_dict()
    assert torch.equal(state["normalize.mean"].flatten(), torch.full((3,), 0.5))
    assert torch.equal(state["normalize.std"].flatten(), torch.full((3,), 0.25))
    assert count_parameters(first, trainable_only=False) == 0  # buffers, not parameters


def test_normalize_buffers_move_with_to() -> None:
    model = build("thesis-shallow").to(torch.float64)
    assert model.normalize.mean.dtype == torch.float64
    assert model.normalize.std.dtype == torch.float64
    assert model(torch.rand(1, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64
    meta = build("thesis-shallow").to("meta")
    assert meta.normalize.mean.device.type == "meta"
    assert meta.normalize.std.device.type == "meta"


def test_model_sees_normalised_inputs() -> None:
    model = build("mlp", (1, 2, 2), depth=1, width=3)
    x = torch.rand(5, 1, 2, 2)
    assert torch.equal(model(x), model.body((x - 0.5) / 0.25))


# --- validation ----------------------------------------------------------------------------


def test_unknown_option_names_the_options() -> None:
    with pytest.raises(ConfigError) as caught:
        build("convnet", dept=3)
    assert (
        str(caught.value) == "model 'convnet' has no option 'dept'; options: depth, width, "
        "dropout, denoise, denoise_after"
    )
    with pytest.raises(ConfigError, match="'thesis-deep' has no option 'depth'; options: dropout"):
        build("thesis-deep", depth=3)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("convnet", {"depth": 0}, "option 'depth' must be an integer >= 1, got 0"),
        ("convnet", {"depth": 2.0}, "option 'depth' must be an integer >= 1"),
        ("convnet", {"depth": True}, "option 'depth' must be an integer"),
        ("convnet", {"width": 0}, "option 'width' must be a number >= 1/32, got 0"),
        ("convnet", {"width": -1.5}, "option 'width' must be a number"),
        ("convnet", {"width": "2"}, "option 'width' must be a number"),
        ("convnet", {"dropout": 0.5}, "option 'dropout' must be true or false, got 0.5"),
        ("thesis-shallow", {"dropout": 1}, "option 'dropout' must be true or false"),
        ("mlp", {"depth": 0}, "option 'depth' must be an integer >= 1"),
        ("mlp", {"width": 0}, "option 'width' must be an integer >= 1"),
        ("mlp", {"dropout": 1.0}, r"option 'dropout' must be a probability in \[0, 1\)"),
        ("preact-resnet18", {"width": 0}, "option 'width' must be an integer >= 1"),
        ("preact-resnet", {"depth": 12}, "option 'depth' must be one of 10, 18, 26, 34, got 12"),
        ("wide-resnet", {"depth": 27}, r"option 'depth' must be 6n \+ 4 .*got 27"),
        ("wide-resnet", {"depth": 4}, r"option 'depth' must be 6n \+ 4 .*got 4"),
        ("wide-resnet", {"widen": 0}, "option 'widen' must be an integer >= 1"),
        ("wide-resnet", {"dropout": -0.1}, "option 'dropout' must be a probability"),
    ],
)
def test_invalid_option_values(name: str, options: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model '{name}': {expected}"):
        build(name, (3, 32, 32), **options)


def test_convnet_too_deep_for_the_input() -> None:
    with pytest.raises(ConfigError) as caught:
        build("convnet", (1, 28, 28), depth=14)
    message = str(caught.value)
    assert message.startswith("model 'convnet': depth=14 is too deep for input 1×28×28")
    assert "the deepest that fits is depth=13" in message
    build("convnet", (1, 28, 28), depth=13)  # 28 - 26 = 2 → pool 1
    with pytest.raises(ConfigError, match=r"depth=3 is too deep for input 1×8×7"):
        build("thesis-deep", (1, 8, 7))


@pytest.mark.parametrize(
    ("mean", "std", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5], "mean and std must have one value per input channel"),
        ([0.5], [0.5, 0.5], "mean and std must have one value per channel each"),
        ([0.5], [0.0], r"std\[0\] must be > 0, got 0.0"),
        ([0.5], [-1.0], r"std\[0\] must be > 0"),
        ([float("nan")], [1.0], r"mean\[0\] must be a finite number"),
        ([], [], "mean must be a non-empty list"),
    ],
)
def test_invalid_mean_and_std(mean: list[float], std: list[float], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_model("mlp", input_shape=(1, 4, 4), num_classes=10, mean=mean, std=std)


def test_invalid_input_shape_and_classes() -> None:
    with pytest.raises(ConfigError, match="input_shape must be three positive integers"):
        build_model("mlp", input_shape=(28, 28), num_classes=10, mean=[0.5], std=[0.5])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="input_shape must be three positive integers"):
        build_model("mlp", input_shape=(1, 0, 28), num_classes=10, mean=[0.5], std=[0.5])
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 1, got 0"):
        build_model("mlp", input_shape=(1, 4, 4), num_classes=0, mean=[0.5], std=[0.5])

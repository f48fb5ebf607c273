"""Feature-denoising blocks (Xie et al. 2019) and the ``denoise`` model option."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.errors import ConfigError
from robustlab.models import build_model
from robustlab.models.denoise import DENOISE_KINDS, DenoisingBlock


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny feature maps: extra threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BLOCK_SETUPS = [(kind, True) for kind in DENOISE_KINDS] + [("gaussian", False), ("dot", False)]


def _model(name: str, shape: tuple[int, int, int] = (1, 8, 8), **options: object) -> nn.Module:
    return build_model(
        name,
        input_shape=shape,
        num_classes=10,
        mean=(0.5,) * shape[0],
        std=(0.5,) * shape[0],
        **options,
    )


@pytest.mark.parametrize(("kind", "embed"), BLOCK_SETUPS)
def test_block_is_exactly_the_identity_at_initialisation(kind: str, embed: bool) -> None:
    torch.manual_seed(0)
    block = DenoisingBlock(4, kind, embed=embed)
    x = torch.randn(2, 4, 5, 6)
    assert torch.equal(block(x), x)
    assert not torch.allclose(block.denoise(x), x)  # the identity comes from the zero conv


@pytest.mark.parametrize(("kind", "embed"), BLOCK_SETUPS)
def test_block_departs_from_the_identity_after_one_step(kind: str, embed: bool) -> None:
    torch.manual_seed(0)
    block = DenoisingBlock(4, kind, embed=embed)
    x = torch.randn(2, 4, 5, 6)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1)
    loss = (block(x) - torch.randn_like(x)).square().sum()
    loss.backward()
    optimizer.step()
    assert not torch.allclose(block(x), x)


def test_mean_and_median_filters_are_local_3x3() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 9.0
    block_mean = DenoisingBlock(1, "mean")
    block_median = DenoisingBlock(1, "median")
    mean = block_mean.denoise(x)
    assert mean[0, 0, 2, 2].item() == pytest.approx(1.0)  # 9 spread over the 3×3 window
    assert mean[0, 0, 1, 1].item() == pytest.approx(1.0)
    assert mean[0, 0, 0, 0].item() == 0.0  # the spike is outside the corner's window
    assert torch.equal(block_median.denoise(x), torch.zeros_like(x))  # a lone spike is removed
    corner = torch.zeros(1, 1, 4, 4)
    corner[0, 0, 0, 0] = 8.0
    assert block_mean.denoise(corner)[0, 0, 0, 0].item() == pytest.approx(2.0)  # 4 real pixels


def test_non_local_weights_match_the_formulas() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 5)
    values = x.flatten(2)  # (N, C, positions)
    gaussian = DenoisingBlock(4, "gaussian", embed=False)
    weights = (values.transpose(1, 2) @ values / 2.0).softmax(dim=-1)  # √C = 2
    expected = torch.einsum("nij,ncj->nci", weights, values).reshape_as(x)
    torch.testing.assert_close(gaussian.denoise(x), expected)
    dot = DenoisingBlock(4, "dot", embed=True)
    assert dot.theta is not None and dot.phi is not None
    theta, phi = dot.theta(x).flatten(2), dot.phi(x).flatten(2)
    pairwise = theta.transpose(1, 2) @ phi / 15  # 3×5 positions
    expected = torch.einsum("nij,ncj->nci", pairwise, values).reshape_as(x)
    torch.testing.assert_close(dot.denoise(x), expected)
    constant = torch.full((1, 4, 3, 3), 0.7)
    torch.testing.assert_close(gaussian.denoise(constant), constant)  # weights sum to one


CONVNET_KEYS = [
    "normalize.mean",
    "normalize.std",
    "body.conv1.weight",
    "body.conv1.bias",
    "body.conv2.weight",
    "body.conv2.bias",
    "body.fc1.weight",
    "body.fc1.bias",
    "body.fc2.weight",
    "body.fc2.bias",
]


def test_convnet_without_denoise_keeps_its_state_dict_keys() -> None:
    assert list(_model("convnet").state_dict()) == CONVNET_KEYS
    deeper = list(_model("convnet", depth=3, dropout=False).state_dict())
    assert deeper == [*CONVNET_KEYS[:6], "body.conv3.weight", "body.conv3.bias", *CONVNET_KEYS[6:]]
    names = [name for name, _ in _model("convnet", denoise=None).body.named_children()]
    assert names == [
        "conv1", "relu1", "conv2", "relu2", "pool", "dropout1", "flatten",
        "fc1", "relu_fc1", "dropout2", "fc2",
    ]  # fmt: skip


def test_convnet_inserts_blocks_after_the_chosen_convs() -> None:
    every = _model("convnet", depth=3, denoise="gaussian").body
    names = [name for name, _ in every.named_children()]
    assert names[:9] == [
        "conv1", "relu1", "denoise1", "conv2", "relu2", "denoise2", "conv3", "relu3", "denoise3",
    ]  # fmt: skip
    some = _model("convnet", depth=3, denoise="median", denoise_after=[2]).body
    blocks = [name for name, module in some.named_children() if isinstance(module, DenoisingBlock)]
    assert blocks == ["denoise2"]
    assert some.denoise2.conv.in_channels == 64
    assert {key for key in some.state_dict() if "denoise" not in key} == set(
        _model("convnet", depth=3).body.state_dict()
    )


def _block_ios(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
        for module in model.modules()
        if isinstance(module, DenoisingBlock)
    ]
    model(x)
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize(
    ("name", "shape", "options", "count"),
    [
        ("convnet", (1, 8, 8), {"denoise": "gaussian"}, 2),
        ("preact-resnet18", (3, 8, 8), {"width": 4, "denoise": "dot"}, 4),
        ("wide-resnet", (1, 8, 8), {"depth": 10, "widen": 1, "denoise": "mean"}, 3),
    ],
)
def test_models_with_blocks_compute_the_same_function_at_initialisation(
    name: str, shape: tuple[int, int, int], options: dict[str, object], count: int
) -> None:
    torch.manual_seed(0)
    model = _model(name, shape, **options).eval()
    x = torch.rand(3, *shape)
    ios = _block_ios(model, x)
    assert len(ios) == count
    for block_in, block_out in ios:
        assert torch.equal(block_in, block_out)
    stripped = copy.deepcopy(model)
    for parent in list(stripped.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, DenoisingBlock):
                setattr(parent, child_name, nn.Identity())
    assert torch.equal(model(x), stripped(x))


def test_resnet_blocks_follow_the_chosen_stages_and_train() -> None:
    torch.manual_seed(0)
    model = _model("wide-resnet", depth=10, widen=1, denoise="gaussian", denoise_after=[1, 3])
    plain = _model("wide-resnet", depth=10, widen=1)
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert {key.split(".")[1] for key in extra} == {"denoise1", "denoise3"}
    assert model.body.denoise3.conv.in_channels == 64
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    model.eval()
    assert any(not torch.equal(i, o) for i, o in _block_ios(model, x))


@pytest.mark.parametrize(
    ("name", "options", "named"),
    [
        ("convnet", {"denoise": "nope"}, "'denoise'"),
        ("convnet", {"denoise": "mean", "denoise_after": [3]}, "'denoise_after'"),
        ("convnet", {"denoise": "mean", "denoise_after": [0]}, "'denoise_after'"),
        ("convnet", {"denoise": "mean", "denoise_after": []}, "'denoise_after'"),
        ("convnet", {"denoise": "mean", "denoise_after": [1, 1]}, "'denoise_after'"),
        ("convnet", {"denoise": "mean", "denoise_after": "1"}, "'denoise_after'"),
        ("convnet", {"denoise_after": [1]}, "'denoise_after'"),
        (
            "wide-resnet",
            {"depth": 10, "widen": 1, "denoise": "dot", "denoise_after": [4]},
            "1 to 3",
        ),
        ("preact-resnet18", {"width": 2, "denoise": 3}, "'denoise'"),
    ],
)
def test_bad_denoise_options_name_the_option(
    name: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        _model(name, **options)

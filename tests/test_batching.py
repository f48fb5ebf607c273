"""Forward-pass helpers: chunking and the channels-last view give the model's own answers and
leave the model exactly as it was."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.batching import ChannelsLastForward, chunked_forward, forward_only_view
from robustlab.models import build_model


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model(
        "thesis-shallow", input_shape=(1, 28, 28), num_classes=10, mean=[0.5], std=[0.5]
    )
    return model.eval()


def test_chunked_forward_matches_one_pass() -> None:
    model = small_cnn()
    x = torch.rand(300, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(chunked_forward(model, x), model(x), atol=1e-5)


def test_channels_last_view_gives_the_models_outputs_and_changes_nothing() -> None:
    model = small_cnn()
    pending = [torch.randn_like(p) for p in model.parameters()]
    for parameter, gradient in zip(model.parameters(), pending, strict=True):
        parameter.grad = gradient.clone()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen: list[int] = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    x = torch.rand(50, 1, 28, 28)

    view = forward_only_view(model)
    assert isinstance(view, ChannelsLastForward)
    with torch.no_grad():
        expected, got = model(x), view(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert seen == [50, 50]  # the caller's model ran, hooks and all
    for name, parameter in model.named_parameters():
        assert parameter.is_contiguous()  # layout of the model's own weights untouched
        assert parameter.requires_grad
        assert torch.equal(parameter, before[name])
    for parameter, gradient in zip(model.parameters(), pending, strict=True):
        assert parameter.grad is not None and torch.equal(parameter.grad, gradient)


def test_view_only_where_it_helps() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert forward_only_view(mlp) is mlp
    empty = nn.Identity()
    assert forward_only_view(empty) is empty

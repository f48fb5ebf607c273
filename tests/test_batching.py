"""Forward-pass helpers: chunking and the forward-only stand-ins give the model's own answers
(to float rounding) and leave the model exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attacks.square import Square
from robustlab.batching import (
    ChannelsLastForward,
    FrozenForward,
    chunked_forward,
    forward_only_view,
)
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

    view = forward_only_view(model, x)
    assert isinstance(view, ChannelsLastForward)  # hooked: never frozen
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


class Doubling(nn.Module):
    """A layer the frozen view does not know: its forward could do anything."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def test_a_plain_model_is_frozen_and_answers_as_the_model_does_at_every_batch_size() -> None:
    model = small_cnn()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    view = forward_only_view(model, torch.rand(4, 1, 28, 28))
    assert isinstance(view, FrozenForward)
    with torch.no_grad():
        for size in (1, 7, 128, 170):
            x = torch.rand(size, 1, 28, 28)
            assert torch.allclose(view(x), model(x), atol=1e-5)
    for name, parameter in model.named_parameters():
        assert parameter.is_contiguous() and parameter.requires_grad
        assert torch.equal(parameter, before[name])
    with torch.no_grad():  # a frozen copy: later changes to the model do not reach it
        next(model.parameters()).add_(1.0)
        x = torch.rand(3, 1, 28, 28)
        assert not torch.allclose(view(x), model(x), atol=1e-3)


@pytest.mark.parametrize("why", ["unknown layer", "training mode"])
def test_a_model_that_may_not_be_frozen_keeps_its_own_forward(why: str) -> None:
    model = small_cnn()
    if why == "unknown layer":
        model = nn.Sequential(Doubling(), model).eval()
    else:
        model.train()
    view = forward_only_view(model, torch.rand(2, 1, 28, 28))
    assert isinstance(view, ChannelsLastForward)


def test_view_only_where_it_helps() -> None:
    x = torch.rand(2, 1, 28, 28)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    assert isinstance(forward_only_view(mlp, x), FrozenForward)
    unknown_mlp = nn.Sequential(nn.Flatten(), Doubling(), nn.Linear(784, 10)).eval()
    assert forward_only_view(unknown_mlp, x) is unknown_mlp  # no convolution: nothing to gain
    empty = nn.Identity()
    assert forward_only_view(empty, x) is empty


def test_square_confirms_the_stand_ins_successes_with_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in that claims every query fools the model must not end the search: the model
    itself judges, so the returned examples are the model's own successes only."""
    model = small_cnn()
    x, y = torch.rand(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)

    class Liar(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(len(inputs), 10)
            logits[:, 1] = 10.0  # never the label 0: "fooled" every time
            return logits

    class FrozenLiar(Liar, FrozenForward):  # a stand-in that is not the model
        def __init__(self) -> None:
            nn.Module.__init__(self)

    monkeypatch.setattr("robustlab.attacks.square.forward_only_view", lambda model, x: FrozenLiar())
    outcome = Square(eps=0.05, queries=20, seed=0).run(model, x, y)
    assert outcome.queries is not None
    with torch.no_grad():
        really_fooled = model(outcome.x_adv).argmax(dim=1) != y
        clean_fooled = model(x).argmax(dim=1) != y
    standing = ~clean_fooled & ~really_fooled
    assert bool(standing.any())
    # searched to the end of the budget, not stopped at the stand-in's first "success"
    assert torch.all(outcome.queries[standing] >= 20)

"""The defended model, the gradient views (BPDA, EOT, joint detectors), detection-aware
scoring and the defense config: each behaviour tested where it could go wrong."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from robustlab.attacks import PGD
from robustlab.config import ModelConfig
from robustlab.defenses import (
    DefendedModel,
    Detector,
    FitData,
    Gradients,
    build_defended,
    gradient_view,
)
from robustlab.defenses.registry import Defense
from robustlab.errors import ConfigError
from robustlab.evaluate.defended import AttackPlan, evaluate_plan


def _classifier(channels: int = 1, size: int = 8, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 8, 8, generator=generator), torch.arange(6)


def test_eot_over_a_deterministic_transform_equals_the_plain_gradient(batch) -> None:
    x, y = batch
    model = build_defended(_classifier(), [{"name": "median", "size": 3}], (1, 8, 8), 10)
    plain = _gradient(model, x, y)
    averaged = _gradient(gradient_view(model, Gradients(eot=5)), x, y)
    assert plain.abs().sum() > 0
    torch.testing.assert_close(averaged, plain)


def test_eot_averages_a_random_defense_over_draws(batch) -> None:
    x, _ = batch
    model = build_defended(_classifier(), [{"name": "logit-noise", "scale": 2.0}], (1, 8, 8), 10)
    view = gradient_view(model, Gradients(eot=200))
    torch.manual_seed(0)
    first = view(x)
    torch.manual_seed(1)
    second = view(x)
    single = [model(x) for _ in range(2)]
    # 200 draws: the averages agree far better than two single draws do
    assert (first - second).abs().mean() < 0.25 * (single[0] - single[1]).abs().mean()


def test_naive_gradient_through_a_codec_is_zero_and_bpda_restores_it(batch) -> None:
    x, y = batch
    model = build_defended(_classifier(), [{"name": "bit-depth", "bits": 3}], (1, 8, 8), 10)
    naive = _gradient(model, x, y)
    assert naive.abs().max() == 0  # rounding: zero gradient almost everywhere
    view = gradient_view(model, Gradients(bpda=True))
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x))  # the forward value is the deployed one
    through = _gradient(view, x, y)
    squeezed = model.transforms[0](x)
    torch.testing.assert_close(through, _gradient(model.classifier, squeezed, y))


def test_real_jpeg_codec_gives_the_naive_attack_a_zero_gradient(batch) -> None:
    x, y = batch
    model = build_defended(_classifier(), [{"name": "jpeg", "quality": 50}], (1, 8, 8), 10)
    assert _gradient(model, x, y).abs().max() == 0
    assert _gradient(gradient_view(model, Gradients(bpda=True)), x, y).abs().max() > 0


def test_bpda_on_a_differentiable_defense_is_refused() -> None:
    model = build_defended(_classifier(), [{"name": "median"}], (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"gradients\.bpda"):
        gradient_view(model, Gradients(bpda=True))
    with pytest.raises(ConfigError, match=r"gradients\.bpda"):
        gradient_view(_classifier(), Gradients(bpda=True))


def test_joint_without_a_detector_is_refused() -> None:
    model = build_defended(_classifier(), [{"name": "jpeg"}], (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"gradients\.joint"):
        gradient_view(model, Gradients(joint=True))


class _Brightness(Detector):
    """Rejects bright images: the score is the mean pixel."""

    def score(self, x: torch.Tensor, classifier: nn.Module) -> torch.Tensor:
        return x.flatten(1).mean(dim=1)


def _detected(false_positive_rate: float = 0.25) -> DefendedModel:
    detector = _Brightness(false_positive_rate)
    model = DefendedModel(_classifier(), [Defense(detectors=[detector])], ["brightness"])
    held_out = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    model.fit(FitData(train=held_out, held_out=held_out))
    return model


def test_detector_threshold_gives_the_requested_false_positive_rate() -> None:
    model = _detected(0.25)
    fresh = torch.rand(4000, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    assert abs(float(model.rejects(fresh).float().mean()) - 0.25) < 0.05


def test_joint_view_rejected_output_wins_exactly_when_a_detector_rejects(batch) -> None:
    model = _detected()
    view = gradient_view(model, Gradients(joint=True))
    x = torch.cat([batch[0] * 0.2, batch[0] * 0.2 + 0.8])  # dark: passes; bright: rejected
    with torch.no_grad():
        out = view(x)
    assert out.shape == (12, 11)
    torch.testing.assert_close(out[:, :10], model(x))
    assert torch.equal(out.argmax(dim=1) == 10, model.rejects(x))


def test_a_rejected_adversarial_example_counts_as_the_defense_winning(batch) -> None:
    x, y = batch
    model = _detected()
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every clean image correct
    model.detectors[0].threshold.fill_(-1.0)  # now every input is rejected
    scored = evaluate_plan(model, x, y, AttackPlan(attack=PGD(eps=0.5, steps=10)))
    assert bool(scored.robust.all())
    assert bool(scored.adversarial_rejected.all())


def test_joint_plan_needs_a_targeted_attack() -> None:
    from robustlab.attacks import build_attack

    with pytest.raises(ConfigError, match="targeted"):
        AttackPlan(attack=build_attack("apgd-t", eps=0.1), gradients=Gradients(joint=True))


def test_defense_config_names_the_unknown_defense_and_option() -> None:
    with pytest.raises(ValidationError, match="unknown defense 'jpg'"):
        ModelConfig.model_validate({"name": "convnet", "defenses": [{"name": "jpg"}]})
    with pytest.raises(ValidationError, match="has no option 'qualty'"):
        ModelConfig.model_validate(
            {"name": "convnet", "defenses": [{"name": "jpeg", "qualty": 50}]}
        )


def test_a_defense_that_does_not_fit_the_input_names_the_entry() -> None:
    with pytest.raises(ConfigError, match=r"defenses\.1: .*median.*size"):
        build_defended(
            _classifier(), [{"name": "jpeg"}, {"name": "median", "size": 20}], (1, 8, 8), 10
        )
    with pytest.raises(ConfigError, match=r"defenses\.0: .*jpeg"):
        build_defended(_classifier(channels=2), [{"name": "jpeg"}], (2, 8, 8), 10)


def test_gradient_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"gradients\.eot"):
        Gradients(eot=0)

"""The survey's defences as training objectives: input-gradient regularisation, the deep
contractive network, defensive distillation and the generative adversarial trainer.

Each defence is checked for the property it is built on, against standard training of the
same small MLP on the built-in digits with the same seed and epochs; the trainer hooks
(teacher loading, re-initialisation, the generator's state in checkpoints) are checked by
resuming killed runs, which must end bit-identical to uninterrupted ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks import PGD
from robustlab.config import PhaseConfig, TrialConfig, parse_config
from robustlab.config.objectives import (
    GenerativeObjectiveConfig,
    check_teacher_phases,
)
from robustlab.config.threat import Threat
from robustlab.data import dataset_info, load_split
from robustlab.errors import ConfigError
from robustlab.store.checkpoint import load_training_state, load_weights
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train import TrainingReporter, train_trial
from robustlab.train.distillation import reinitialise
from robustlab.train.generative import GenerativeObjective
from robustlab.train.objectives import TrainingStep, build_objective
from robustlab.train.regularisers import captured_activations, jacobian_penalty

MLP: dict[str, Any] = {"name": "mlp", "options": {"depth": 2, "width": 32}}
DROPOUT_MLP: dict[str, Any] = {"name": "mlp", "options": {"depth": 2, "width": 32, "dropout": 0.1}}


def digits_trial(
    phases: list[dict[str, Any]], model: dict[str, Any] = MLP, *, epoch_attacks: bool = False
) -> TrialConfig:
    """A trial on digits; without ``epoch_attacks`` nothing is attacked after each epoch."""
    raw: dict[str, Any] = {
        "trial": "defence",
        "data": {"dataset": "digits"},
        "model": model,
        "seed": 0,
        "device": "cpu",
        "phases": phases,
        "evaluation": {"train_subset": 0, "attack_images": 50},
    }
    if not epoch_attacks:
        raw["evaluation"]["attacks"] = []
    config: TrialConfig = parse_config(TrialConfig, raw, source="test")
    return config


def phase(name: str, objective: Any = "standard", epochs: int = 4, **more: Any) -> dict[str, Any]:
    return {"name": name, "epochs": epochs, "batch_size": 64, "objective": objective, **more}


def train(config: TrialConfig, run_dir: Path, phase_name: str | None = None) -> nn.Module:
    """Train ``config`` and return its final model (or that at the end of ``phase_name``)."""
    train_trial(config, run_dir)
    return load_trained_model(RunDirectory(run_dir), torch.device("cpu"), phase=phase_name).model


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, above all on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_batch() -> tuple[torch.Tensor, torch.Tensor]:
    split = load_split("digits", "test")
    return split.images[:200], split.labels[:200]


@pytest.fixture(scope="module")
def standard_model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    return train(digits_trial([phase("a")]), tmp_path_factory.mktemp("standard") / "run")


def mean_input_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return float(gradient.flatten(1).norm(dim=1).mean())


def exact_jacobian_norm(model: nn.Module, x: torch.Tensor) -> float:
    """Σ over activation modules of ‖∂h/∂x‖²_F, mean over examples, from the full Jacobian
    of the batch (its blocks across examples are zero: the model is in eval mode)."""

    def hidden(z: torch.Tensor) -> torch.Tensor:
        with captured_activations(model) as outputs:
            model(z)
        return torch.cat([h.flatten() for h in outputs])

    jacobian = torch.autograd.functional.jacobian(hidden, x, vectorize=True)
    return float(jacobian.pow(2).sum()) / len(x)


# --- input-gradient regularisation -------------------------------------------------------


def test_input_gradient_objective_is_ce_plus_weighted_squared_gradient() -> None:
    model = _fixed_model()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    objective = build_objective(_objective({"type": "input_gradient", "weight": 3.0}))
    output = objective(model, x, y, TrainingStep(epoch=0.0, index=0))
    xx = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(xx), y, reduction="none")
    (gradient,) = torch.autograd.grad(losses.sum(), xx)
    expected = losses.mean() + 3.0 * gradient.pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(output.loss, expected, rtol=1e-5)
    output.loss.backward()  # double backprop reaches the parameters through the penalty
    assert all(p.grad is not None for p in model.parameters())
    assert x.grad is None


def test_gradient_penalty_lowers_input_gradients(
    tmp_path: Path, standard_model: nn.Module, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    objective = {"type": "input_gradient", "weight": 1.0}
    regularised = train(digits_trial([phase("a", objective)]), tmp_path / "run")
    x, y = test_batch
    plain, penalised = (mean_input_gradient_norm(m, x, y) for m in (standard_model, regularised))
    assert penalised < 0.75 * plain, (penalised, plain)
    accuracy = (regularised(x).argmax(1) == y).float().mean()
    assert accuracy > 0.6  # flatter, and still a classifier


# --- deep contractive network ------------------------------------------------------------


def test_projection_estimate_matches_the_exact_jacobian_norm() -> None:
    model = _fixed_model()
    x = torch.rand(6, 1, 8, 8).requires_grad_(True)
    with captured_activations(model) as outputs:
        model(x)
    assert len(outputs) == 2  # the MLP's two ReLUs
    generator = torch.Generator().manual_seed(0)
    estimate = jacobian_penalty(outputs, x, 600, generator, create_graph=False)
    exact = exact_jacobian_norm(model, x.detach())
    assert float(estimate) == pytest.approx(exact, rel=0.1)


def test_contractive_penalty_lowers_the_jacobian(
    tmp_path: Path, standard_model: nn.Module, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    objective = {"type": "contractive", "weight": 0.01, "projections": 2}
    contracted = train(digits_trial([phase("a", objective)]), tmp_path / "run")
    x = test_batch[0][:30]
    plain, penalised = (exact_jacobian_norm(m, x) for m in (standard_model, contracted))
    assert penalised < 0.5 * plain, (penalised, plain)


def test_contractive_on_logits_and_models_without_activation_modules() -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    functional = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    logits = build_objective(_objective({"type": "contractive", "layers": "logits"}))
    assert logits(functional, x, y).loss.requires_grad
    hidden = build_objective(_objective({"type": "contractive"}))
    with pytest.raises(ConfigError, match="set layers: logits"):
        hidden(functional, x, y)


# --- defensive distillation --------------------------------------------------------------

TEMPERATURE = 20.0


DISTILLING = {"epochs": 6, "optimizer": {"type": "adam", "lr": 0.01}}
"""Both distillation phases, and the standard model they are compared with, train so."""


def distillation_trial(
    model: dict[str, Any] = MLP, epochs: int = 6, reinitialise: bool = True
) -> TrialConfig:
    teacher = {"type": "standard", "temperature": TEMPERATURE}
    student = {
        "type": "distillation",
        "teacher_phase": "teacher",
        "temperature": TEMPERATURE,
        "reinitialise": reinitialise,
    }
    settings = {**DISTILLING, "epochs": epochs}
    return digits_trial(
        [phase("teacher", teacher, **settings), phase("student", student, **settings)], model
    )


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1)


def test_distillation_softens_at_t_and_saturates_at_1(
    tmp_path: Path, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    run = tmp_path / "run"
    student = train(distillation_trial(), run)
    teacher = load_trained_model(RunDirectory(run), torch.device("cpu"), phase="teacher").model
    standard = train(digits_trial([phase("a", **DISTILLING)]), tmp_path / "standard")
    x, y = test_batch
    with torch.no_grad():
        taught = teacher(x)
        soft, hard = entropy(taught / TEMPERATURE).mean(), entropy(taught).mean()
        deployed, plain = student(x), standard(x)  # at T = 1: the raw logits
    assert soft > 0.1 and hard < 0.1 * soft, (soft, hard)  # soft labels at T, hard at 1
    assert (deployed.argmax(1) == y).float().mean() > 0.8  # learned from soft labels alone
    saturated = [
        float((F.softmax(z, 1).max(1).values > 0.99999).float().mean()) for z in (deployed, plain)
    ]
    assert saturated[0] > 0.8 and saturated[0] > saturated[1] + 0.5, saturated
    scale = [float(z.std(1).mean()) for z in (deployed, plain)]
    assert scale[0] > TEMPERATURE / 4 * scale[1], scale  # logits about T times larger


def test_teacher_trains_at_temperature_and_old_standard_configs_dump_unchanged() -> None:
    model = _fixed_model()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    teacher = build_objective(_objective({"type": "standard", "temperature": 5.0}))
    output = teacher(model, x, y)
    assert torch.allclose(output.loss, F.cross_entropy(model(x) / 5.0, y))
    assert torch.equal(output.logits, model(x))  # scored and deployed on the raw logits
    # At T = 1 the option is left out of dumps: shared-phase and index digests stay as they were.
    assert _objective({"type": "standard"}).model_dump() == {
        "type": "standard",
        "label_smoothing": 0.0,
    }
    assert _objective({"type": "standard", "temperature": 5}).model_dump()["temperature"] == 5.0


def test_student_reinitialisation_is_seeded_and_leaves_the_random_stream() -> None:
    config = distillation_trial()
    info = dataset_info("digits")
    model = _fixed_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    reinitialise(model, config, info, 1)
    assert torch.equal(torch.get_rng_state(), state)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(first["body.fc1.weight"], before["body.fc1.weight"])
    reinitialise(model, config, info, 1)
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_distillation_resumes_exactly(tmp_path: Path) -> None:
    """Killed in the student phase or at its start: the teacher is loaded again and the student
    re-initialised only at its first epoch, so the result matches an uninterrupted run."""
    config = distillation_trial(DROPOUT_MLP, epochs=2)
    train_trial(config, tmp_path / "reference")
    reference = load_weights(RunDirectory(tmp_path / "reference").final_weights)
    for stop_after in (3, 4):  # checkpoint at the phase boundary; mid-way through the student
        run_dir = tmp_path / f"stop{stop_after}"
        _train_until(config, run_dir, stop_after)
        train_trial(config, run_dir, resume=True)
        resumed = load_weights(RunDirectory(run_dir).final_weights)
        assert all(torch.equal(reference[k], resumed[k]) for k in reference), stop_after
    # The student started afresh: its first epoch's loss is far above that of a student
    # started from the teacher's weights (which starts at the soft labels' entropy).
    train_trial(distillation_trial(DROPOUT_MLP, epochs=2, reinitialise=False), tmp_path / "kept")
    first = [_first_student_loss(tmp_path / name) for name in ("reference", "kept")]
    assert first[0] > first[1] + 0.5, first


# --- generative adversarial trainer ------------------------------------------------------

EPS = 0.2


def test_generator_learns_to_attack_within_eps(standard_model: nn.Module) -> None:
    config = GenerativeObjectiveConfig(eps=EPS, generator_lr=0.01, generator_width=64)
    objective = build_objective(config)
    assert isinstance(objective, GenerativeObjective)
    split = load_split("digits", "train")
    x, y = split.images[:128], split.labels[:128]
    model = standard_model.eval()
    parameters = {k: v.clone() for k, v in model.state_dict().items()}

    def perturbed_loss() -> float:
        x_adv = objective.perturb(model, x, y)
        delta = x_adv - x
        assert delta.abs().max() <= EPS + 1e-6 and ((x_adv >= 0) & (x_adv <= 1)).all()
        with torch.no_grad():
            return float(F.cross_entropy(model(x_adv), y))

    start = perturbed_loss()
    for index in range(40):  # generator steps only: nothing steps the classifier
        objective(model, x, y, TrainingStep(epoch=0.0, index=index))
    assert perturbed_loss() > 2 * start
    assert all(torch.equal(parameters[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and x.grad is None
    assert isinstance(objective.training_attack(), PGD)
    assert objective.training_attack().eps == EPS


def test_generative_training_resumes_bit_identical(tmp_path: Path) -> None:
    objective = {"type": "generative", "eps": EPS, "generator_width": 32}
    config = digits_trial([phase("gat", objective, epochs=2)], DROPOUT_MLP)
    train_trial(config, tmp_path / "reference")
    reference = RunDirectory(tmp_path / "reference")
    run = RunDirectory(tmp_path / "killed")
    _train_until(config, run.path, 2)  # checkpoint after epoch 1: the generator must carry over
    saved = load_training_state(run.last_checkpoint).objective
    assert saved is not None and set(saved) == {"input_shape", "generator", "optimizer"}
    train_trial(config, run.path, resume=True)
    expected, resumed = load_weights(reference.final_weights), load_weights(run.final_weights)
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    generators = [load_training_state(r.last_checkpoint).objective for r in (reference, run)]
    assert generators[0] is not None and generators[1] is not None
    weights = [g["generator"] for g in generators]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_generative_takes_the_threat_and_sets_the_epoch_attacks() -> None:
    config = digits_trial([phase("gat", {"type": "generative"})], epoch_attacks=True)
    inherited = config.with_threat(Threat(eps=0.1))
    assert inherited.phases[0].objective.eps == 0.1  # type: ignore[union-attr]
    attacks = inherited.phase_attacks(inherited.phases[0])
    assert [a.build().eps for a in attacks] == [0.1, 0.1]  # type: ignore[attr-defined]
    assert [a.params["steps"] for a in attacks] == [40, 160]
    with pytest.raises(ValueError, match="norm"):
        config.with_threat(Threat(norm="l2"))
    for kind in ("input_gradient", "contractive"):
        plain = digits_trial([phase("p", {"type": kind})]).with_threat(Threat(eps=0.1))
        assert plain.phases[0].attack is None and not plain.phases[0].objective.inherits_eps()


# --- configs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objective", "field"),
    [
        ({"type": "input_gradient", "weight": 0}, "objective.input_gradient.weight"),
        ({"type": "input_gradient", "weight": -1}, "objective.input_gradient.weight"),
        ({"type": "contractive", "weight": 0}, "objective.contractive.weight"),
        ({"type": "contractive", "projections": 0}, "objective.contractive.projections"),
        ({"type": "contractive", "layers": "all"}, "objective.contractive.layers"),
        ({"type": "distillation"}, "objective.distillation.teacher_phase"),
        ({"type": "distillation", "teacher_phase": "a b"}, "objective.distillation.teacher_phase"),
        (
            {"type": "distillation", "teacher_phase": "t", "temperature": 0},
            "objective.distillation.temperature",
        ),
        ({"type": "standard", "temperature": 0}, "objective.standard.temperature"),
        ({"type": "generative", "clean_weight": 1}, "objective.generative.clean_weight"),
        ({"type": "generative", "generator_lr": 0}, "objective.generative.generator_lr"),
        ({"type": "generative", "eps": 0}, "generative objective: eps must be > 0"),
    ],
)
def test_bad_option_names_its_field(objective: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(PhaseConfig, {"name": "p", "epochs": 1, "objective": objective}, source="t")


@pytest.mark.parametrize(
    ("teacher", "why"),
    [
        ("nowhere", "'nowhere' names no phase of this trial"),
        ("later", "'later' names a later phase"),
        ("student", "'student' is this phase itself"),
    ],
)
def test_teacher_phase_must_be_an_earlier_phase(teacher: str, why: str) -> None:
    phases = [
        PhaseConfig.model_validate(p)
        for p in (
            phase("first"),
            phase("student", {"type": "distillation", "teacher_phase": teacher}),
            phase("later"),
        )
    ]
    with pytest.raises(ValueError, match=r"phases\.1\.objective\.teacher_phase") as raised:
        check_teacher_phases(phases)
    assert why in str(raised.value) and "name an earlier phase (first)" in str(raised.value)
    phases[1] = PhaseConfig.model_validate(
        phase("student", {"type": "distillation", "teacher_phase": "first"})
    )
    check_teacher_phases(phases)  # an earlier phase passes


def test_checkpoints_without_objective_state_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    old = {
        "format": 1,
        "model": {"w": torch.zeros(2)},
        "optimizer": {},
        "phase_index": 0,
        "epoch_in_phase": 1,
        "global_epoch": 1,
        "torch_rng": torch.get_rng_state(),
        "shuffle_rng": torch.get_rng_state(),
        "cuda_rng": None,
        "train_seconds": 1.0,
    }
    torch.save(old, path)
    assert load_training_state(path).objective is None


# --- helpers -----------------------------------------------------------------------------


def _first_student_loss(run_dir: Path) -> float:
    records = RunDirectory(run_dir).read_metrics()
    (first,) = [r for r in records if r.get("phase") == "student" and r.get("epoch") == 1]
    return float(first["train_loss"])


def _objective(raw: dict[str, Any]) -> Any:
    return parse_config(
        PhaseConfig, {"name": "p", "epochs": 1, "objective": raw}, source="t"
    ).objective


def _fixed_model() -> nn.Module:
    from robustlab.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "mlp", input_shape=(1, 8, 8), num_classes=10, mean=[0.3], std=[0.37], depth=2, width=32
    )
    return model.eval()


def _train_until(config: TrialConfig, run_dir: Path, epochs: int) -> None:
    """Kill the run as global epoch ``epochs`` ends, before its checkpoint: the run resumes
    from the checkpoint of the epoch before."""

    class Stop(Exception):
        pass

    class Stopper(TrainingReporter):
        def epoch_done(self, record: dict[str, Any]) -> None:
            if record["global_epoch"] == epochs:
                raise Stop

    with pytest.raises(Stop):
        train_trial(config, run_dir, reporter=Stopper())


def test_trial_config_refuses_a_teacher_phase_that_is_not_an_earlier_phase() -> None:
    from pydantic import ValidationError

    from robustlab.config import TrialConfig

    base = {"trial": "t", "data": {"dataset": "digits"}, "model": {"name": "mlp"}}
    student = {"type": "distillation", "teacher_phase": "teacher"}
    with pytest.raises(ValidationError, match=r"phases\.0\.objective\.teacher_phase"):
        TrialConfig.model_validate(
            {**base, "phases": [{"name": "student", "epochs": 1, "objective": student}]}
        )
    later = [
        {"name": "student", "epochs": 1, "objective": student},
        {"name": "teacher", "epochs": 1},
    ]
    with pytest.raises(ValidationError, match="teacher_phase"):
        TrialConfig.model_validate({**base, "phases": later})

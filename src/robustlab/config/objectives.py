"""Schemas of the training objectives, each with the attack it trains against.

Every adversarial objective takes the experiment's threat (``with_threat``) where it states no
ε of its own, so one ε set in one place reaches the training attack too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, model_validator
from typing_extensions import Self

from robustlab.config.attacks import AttackConfig, pgd_config
from robustlab.config.base import NAME_PATTERN, Budget, StrictModel
from robustlab.config.threat import Threat


class OverfittingCheckConfig(StrictModel):
    """Catastrophic-overfitting check (Wong et al. 2020) at the end of every epoch.

    A fixed probe of training images is attacked with the phase's training attack and with a
    multi-step PGD at the same ε. Single-step training that overfits catastrophically keeps
    its own attack at bay while PGD accuracy collapses, so the check flags a large gap
    between the two, or a large drop of PGD accuracy below its best epoch so far.
    """

    images: Annotated[int, Field(ge=1)] = 512
    pgd_steps: Annotated[int, Field(ge=2)] = 10
    max_gap: Annotated[float, Field(gt=0, le=1)] = 0.3
    """Flag when accuracy under the training attack exceeds PGD accuracy by more than this."""
    max_drop: Annotated[float, Field(gt=0, le=1)] = 0.2
    """Flag when PGD accuracy falls more than this below its best epoch in the phase."""
    action: Literal["stop", "warn"] = "stop"
    """stop: restore the weights of the epoch before and end the phase; warn: record only."""


class _NoAttackObjective(StrictModel):
    """An objective that trains against no attack, so the experiment's threat changes nothing."""

    def with_threat(self, threat: Threat) -> Self:
        return self

    def inherits_eps(self) -> bool:
        return False


class StandardObjectiveConfig(_NoAttackObjective):
    """Plain cross-entropy on clean inputs.

    ``temperature`` T trains on CE(softmax(logits / T)): the teacher phase of defensive
    distillation (Papernot et al. 2016), which must be trained at the temperature its student
    distils at. T = 1 is ordinary training.
    """

    type: Literal["standard"] = "standard"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    temperature: Annotated[float, Field(gt=0, exclude_if=lambda value: value == 1.0)] = 1.0
    """Left out of dumps at 1, so the recorded configs and digests of standard phases (shared
    runs, the trial index) are those of before this option existed."""


class AdversarialObjectiveConfig(StrictModel):
    """Adversarial training on the attack's examples (Madry et al. 2018 with PGD).

    ``clean_weight`` w mixes in clean examples as Goodfellow et al. 2015 did:
    loss = w·CE(x) + (1 − w)·CE(x_adv). ``eps_warmup_epochs`` ramps ε (and the step size with
    it) linearly from 0 over that many epochs of the phase, which small MNIST networks need at
    ε = 0.3.
    """

    type: Literal["adversarial"] = "adversarial"
    attack: AttackConfig = Field(
        default_factory=lambda: pgd_config(alpha=0.01, steps=40),
        description="any registered attack (default: PGD-40, α = 0.01, at the threat's ε, "
        "else 0.3)",
    )
    clean_weight: Annotated[float, Field(ge=0, lt=1)] = 0.0
    eps_warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    overfitting_check: OverfittingCheckConfig | None = None

    def with_threat(self, threat: Threat) -> Self:
        attack = self.attack.with_threat(threat)
        return self if attack is self.attack else self.model_copy(update={"attack": attack})

    def inherits_eps(self) -> bool:
        return self.attack.inherits("eps")


class _OwnBudgetObjective(StrictModel):
    """An objective whose ε is a field of its own (its attack is built from it): it takes the
    threat's ε and norm where it states none.

    Its ε and step are judged here, by the rule every attack uses, so an error names this
    objective's own field rather than the PGD it is built into.
    """

    STEP_FIELD: ClassVar[str | None] = None
    """The field holding the attack's step size (None: the objective has no such field)."""

    @model_validator(mode="after")
    def _budget_means_something(self) -> Self:
        from robustlab.attacks.validation import eps_problem  # attacks import no config

        kind = getattr(self, "type")  # noqa: B009 (a field of every subclass)
        problem = eps_problem(getattr(self, "eps"), getattr(self, "norm"))  # noqa: B009
        if problem is not None:
            raise ValueError(f"{kind} objective: eps {problem}")
        step = None if self.STEP_FIELD is None else getattr(self, self.STEP_FIELD)
        if step is not None and step <= 0:
            raise ValueError(
                f"{kind} objective: {self.STEP_FIELD} must be > 0, got {step!r} (null: the "
                "default step)"
            )
        self.attack  # noqa: B018 (AttackConfig validates by building)
        return self

    @property
    def attack(self) -> AttackConfig:
        raise NotImplementedError

    def with_threat(self, threat: Threat) -> Self:
        return _with_budget_fields(self, threat)

    def inherits_eps(self) -> bool:
        return "eps" not in self.model_fields_set


class FGSMRSObjectiveConfig(_OwnBudgetObjective):
    """Fast adversarial training (Wong et al. 2020): FGSM from a uniform random start.

    The training attack is one PGD step from a random point in the ball with step
    ``alpha`` (default 1.25·eps, the paper's choice), projected back onto the ball. The
    catastrophic-overfitting check is on by default, as the paper recommends.
    """

    type: Literal["fgsm_rs"] = "fgsm_rs"
    STEP_FIELD: ClassVar[str] = "alpha"
    eps: Budget = 0.3
    alpha: Budget | None = None
    norm: Literal["linf", "l2"] = "linf"
    clean_weight: Annotated[float, Field(ge=0, lt=1)] = 0.0
    eps_warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    overfitting_check: OverfittingCheckConfig | None = Field(default_factory=OverfittingCheckConfig)

    @property
    def attack(self) -> AttackConfig:
        alpha = 1.25 * self.eps if self.alpha is None else self.alpha
        return pgd_config(eps=self.eps, alpha=alpha, steps=1, norm=self.norm, random_start=True)


class FreeObjectiveConfig(_OwnBudgetObjective):
    """Free adversarial training (Shafahi et al. 2019): each minibatch is replayed ``replays``
    times; one backward pass gives both the parameter update and the perturbation's next
    signed-gradient step of size ``step`` (default eps), which carries over to the next
    minibatch. Its update is part of the algorithm, so it takes no attack from the registry.
    The perturbation starts at zero every epoch, so a resumed run matches an uninterrupted one.
    """

    type: Literal["free"] = "free"
    STEP_FIELD: ClassVar[str] = "step"
    eps: Budget = 0.3
    step: Budget | None = None
    replays: Annotated[int, Field(ge=1, le=64)] = 4
    norm: Literal["linf", "l2"] = "linf"
    eps_warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    overfitting_check: OverfittingCheckConfig | None = None

    @property
    def attack(self) -> AttackConfig:
        """The single-step attack the check and the default evaluations compare against."""
        step = self.eps if self.step is None else self.step
        return pgd_config(eps=self.eps, alpha=step, steps=1, norm=self.norm, random_start=True)


class TradesObjectiveConfig(StrictModel):
    """TRADES (Zhang et al. 2019): CE(x) + β·KL(f(x) ‖ f(x_adv)).

    The default attack is TRADES's own inner maximisation (``pgd-kl``: PGD ascending the KL
    divergence from the clean prediction); any registered attack may replace it.
    """

    type: Literal["trades"] = "trades"
    beta: Annotated[float, Field(gt=0)] = 6.0
    attack: AttackConfig = Field(
        default_factory=lambda: AttackConfig.model_validate({"name": "pgd-kl"}),
        description="default: PGD on the KL divergence, 40 steps of 0.01, at the threat's ε "
        "(else 0.3)",
    )
    eps_warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    overfitting_check: OverfittingCheckConfig | None = None

    def with_threat(self, threat: Threat) -> Self:
        attack = self.attack.with_threat(threat)
        return self if attack is self.attack else self.model_copy(update={"attack": attack})

    def inherits_eps(self) -> bool:
        return self.attack.inherits("eps")


class InputGradientObjectiveConfig(_NoAttackObjective):
    """Input-gradient regularisation (Ross & Doshi-Velez 2018): CE + λ·‖∇ₓ CE‖², the squared
    L2 norm of each example's input gradient averaged over the batch (double backprop).

    λ‖∇ₓ CE‖² = (√λ·‖∇ₓ CE‖)² is the squared first-order rise of the loss under the worst L2
    perturbation of radius √λ in [0, 1] pixel units. Default λ = 1 (radius 1): on MNIST it
    kept a 2×256 MLP's clean accuracy (97% after 2 epochs) and raised its PGD-10 accuracy at
    L∞ ε = 0.1 from 18% to 66%; λ = 10 (radius 3.2) cost 19 points of clean accuracy.
    """

    type: Literal["input_gradient"] = "input_gradient"
    weight: Annotated[float, Field(gt=0)] = 1.0


class ContractiveObjectiveConfig(_NoAttackObjective):
    """Deep contractive network (Gu & Rigazio 2015): CE + λ·‖∂h/∂x‖²_F, with the squared
    Frobenius norm of each hidden layer's Jacobian with respect to the input estimated by
    random projections (see ``robustlab.train.regularisers``).

    The paper penalises each layer's Jacobian with respect to the layer before; the Jacobians
    with respect to the input bound the same sensitivity end to end and cost one double
    backprop per projection whatever the depth. ``layers``: ``hidden`` (the outputs of the
    model's activation modules) or ``logits``. The penalty sums over hidden units, so wide or
    convolutional models need a smaller λ; the default 0.01 cost a 2×256 MLP on MNIST 3 points
    of clean accuracy and raised its PGD-10 accuracy at L∞ ε = 0.1 from 18% to 49%.
    """

    type: Literal["contractive"] = "contractive"
    weight: Annotated[float, Field(gt=0)] = 0.01
    projections: Annotated[int, Field(ge=1, le=64)] = 1
    layers: Literal["hidden", "logits"] = "hidden"


class DistillationObjectiveConfig(_NoAttackObjective):
    """Defensive distillation (Papernot et al. 2016): CE between the teacher's soft labels
    softmax(teacher(x) / T) and the student's softmax(student(x) / T).

    The teacher is the model at the end of ``teacher_phase``, an earlier phase of the trial
    trained with ``objective: {type: standard, temperature: T}``. With ``reinitialise`` the
    student starts from a fresh initialisation, as in the paper. Deployed at T = 1 (the raw
    logits), the student's softmax saturates. Default T = 100: the paper's MNIST setting.
    """

    type: Literal["distillation"] = "distillation"
    teacher_phase: str = Field(pattern=NAME_PATTERN)
    temperature: Annotated[float, Field(gt=0)] = 100.0
    reinitialise: bool = True


class GenerativeObjectiveConfig(_OwnBudgetObjective):
    """Generative adversarial trainer (Lee, Han & Lee 2017): a generator maps the classifier's
    input gradient to a perturbation ε·tanh(G(∇ₓ CE)) and is trained, with its own Adam, to
    raise the classifier's loss; the classifier minimises w·CE(x) + (1 − w)·CE(x + δ).

    ``perturbation_weight`` is the paper's penalty c·‖δ‖² on the generator's loss; tanh already
    keeps δ within ε here, so it defaults to 0. ``attack`` (PGD-40 at ε) serves only the
    evaluation after every epoch: the generator is the training attack.
    """

    type: Literal["generative"] = "generative"
    eps: Budget = 0.3
    norm: Literal["linf"] = "linf"
    clean_weight: Annotated[float, Field(ge=0, lt=1)] = 0.5
    generator_lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    generator_width: Annotated[int, Field(ge=1, le=65_536)] = 256
    perturbation_weight: Annotated[float, Field(ge=0)] = 0.0

    @property
    def attack(self) -> AttackConfig:
        return pgd_config(eps=self.eps, steps=40, norm=self.norm, random_start=True)


ObjectiveConfig = Annotated[
    StandardObjectiveConfig
    | AdversarialObjectiveConfig
    | FGSMRSObjectiveConfig
    | FreeObjectiveConfig
    | TradesObjectiveConfig
    | InputGradientObjectiveConfig
    | ContractiveObjectiveConfig
    | DistillationObjectiveConfig
    | GenerativeObjectiveConfig,
    Field(discriminator="type"),
]

AdversarialObjectiveConfigs = (
    AdversarialObjectiveConfig
    | FGSMRSObjectiveConfig
    | FreeObjectiveConfig
    | TradesObjectiveConfig
    | GenerativeObjectiveConfig
)


def training_attack(objective: Any) -> AttackConfig | None:
    """The attack an objective trains against (None for standard training)."""
    attack: AttackConfig | None = getattr(objective, "attack", None)
    return attack


def check_teacher_phases(phases: Sequence[Any]) -> None:
    """Every ``teacher_phase`` names an earlier phase of the same trial, whose end-of-phase
    weights exist by the time the student's phase starts. Raises ValueError naming the field.

    ``phases``: the trial's ``PhaseConfig`` list (typed loosely: ``trial`` imports this module).
    """
    for index, phase in enumerate(phases):
        teacher = getattr(phase.objective, "teacher_phase", None)
        if teacher is None:
            continue
        earlier = [previous.name for previous in phases[:index]]
        if teacher in earlier:
            continue
        field = f"phases.{index}.objective.teacher_phase"
        names = [other.name for other in phases]
        if teacher == phase.name:
            why = "is this phase itself; a student cannot distil from its own weights"
        elif teacher in names:
            why = "names a later phase, whose weights do not exist yet"
        else:
            why = f"names no phase of this trial (phases: {', '.join(names)})"
        raise ValueError(
            f"{field}: {teacher!r} {why}; name an earlier phase"
            + (f" ({', '.join(earlier)})" if earlier else ", and put the teacher's phase first")
        )


BudgetObjective = TypeVar("BudgetObjective", bound=StrictModel)


def _with_budget_fields(objective: BudgetObjective, threat: Threat) -> BudgetObjective:
    """An objective with ``eps``/``norm`` fields, given the threat's where it states none;
    validated again, so a norm the objective cannot take is an error naming it."""
    given = {"eps": threat.eps, "norm": threat.norm}
    update = {
        key: value
        for key, value in given.items()
        if value is not None and key not in objective.model_fields_set
    }
    if not update:
        return objective
    data = {**objective.model_dump(mode="json", exclude_unset=True), **update}
    return type(objective).model_validate(data)

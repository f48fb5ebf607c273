"""Schemas of the training objectives, each with the attack it trains against.

Every adversarial objective takes the experiment's threat (``with_threat``) where it states no
ε of its own, so one ε set in one place reaches the training attack too.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import Field, model_validator
from typing_extensions import Self

from robustlab.config.attacks import AttackConfig, pgd_config
from robustlab.config.base import Budget, StrictModel
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


class StandardObjectiveConfig(StrictModel):
    """Plain cross-entropy on clean inputs."""

    type: Literal["standard"] = "standard"
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0

    def with_threat(self, threat: Threat) -> Self:
        return self

    def inherits_eps(self) -> bool:
        return False


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

    STEP_FIELD: ClassVar[str]

    @model_validator(mode="after")
    def _budget_means_something(self) -> Self:
        from robustlab.attacks.validation import eps_problem  # attacks import no config

        kind = getattr(self, "type")  # noqa: B009 (a field of every subclass)
        problem = eps_problem(getattr(self, "eps"), getattr(self, "norm"))  # noqa: B009
        if problem is not None:
            raise ValueError(f"{kind} objective: eps {problem}")
        step = getattr(self, self.STEP_FIELD)
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


ObjectiveConfig = Annotated[
    StandardObjectiveConfig
    | AdversarialObjectiveConfig
    | FGSMRSObjectiveConfig
    | FreeObjectiveConfig
    | TradesObjectiveConfig,
    Field(discriminator="type"),
]

AdversarialObjectiveConfigs = (
    AdversarialObjectiveConfig | FGSMRSObjectiveConfig | FreeObjectiveConfig | TradesObjectiveConfig
)


def training_attack(objective: Any) -> AttackConfig | None:
    """The attack an objective trains against (None for standard training)."""
    attack: AttackConfig | None = getattr(objective, "attack", None)
    return attack


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

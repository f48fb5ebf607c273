"""Black-box transfer through a substitute model trained on the victim's labels.

Paper: Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks
against Machine Learning", AsiaCCS 2017.

The attacked model is an oracle: only its predicted labels are read. A small substitute is
trained on a few inputs the oracle labelled, the training set is grown by Jacobian-based
augmentation (each point nudged along the sign of the substitute's gradient for its oracle
label, where the substitute's decision boundary is likely to be), and a white-box attack on
the substitute crafts the examples that are sent to the oracle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.base import Attack, AttackContext
from robustlab.attacks.registry import ATTACKS, attack_parameters, build_attack, register_attack
from robustlab.attacks.validation import check_count, check_eps, check_range, check_steps
from robustlab.errors import RobustlabError
from robustlab.models import MODELS, build_model, model_options

logger = logging.getLogger(__name__)

ORACLE_CHUNK = 512
"""Oracle queries are sent in batches of at most this many inputs."""


@register_attack
@dataclass(frozen=True, kw_only=True)
class SubstituteTransfer(Attack):
    """Papernot's practical black-box attack: train a substitute on oracle labels, transfer.

    Paper: Papernot et al., "Practical Black-Box Attacks against Machine Learning", 2017.
    Threat model: the inner attack's norm ball of radius ``eps`` (L∞ for FGSM), intersected
    with [0, 1]; the attacker reads only the model's argmax labels — no scores, no gradients.

    The first ``seed_examples`` inputs of the batch, labelled by the oracle, are the initial
    training set S₀. The substitute is trained ``epochs`` epochs on S₀, then for each of
    ``rounds`` rounds S grows to S ∪ {clip(x + λ·sign(∇ₓ F[O(x)](x)))}, the new points are
    labelled by the oracle and training continues on all of S. With ``flip_every`` = τ the
    step is λ·(−1)^⌊ρ/τ⌋ (the paper's periodic step size). The oracle answers
    ``oracle_queries(len(x))`` = m·2^rounds queries for m seed examples; the crafted examples
    themselves are not queried. Every batch the attack is called with trains its own
    substitute, so an evaluator that splits the data in batches repeats the training.

    Arguments:
        eps: budget of the inner attack.
        attack: registered white-box attack run on the substitute (fgsm, pgd, bim, ...);
            ``steps`` is passed to it when it has such a parameter.
        substitute: registered model built for the batch's input shape; ``substitute_depth``
            and ``substitute_width`` are passed as its depth/width options when it has them
            (the default is convnet(depth=2, width=0.5) without dropout).
        seed_examples: size of S₀ (None: the whole batch).
        rounds: Jacobian augmentation rounds; epochs, batch_size, learning_rate: Adam
            training of the substitute after S₀ and after each round.
        augment_step: λ of the augmentation.
        num_classes: classes of the oracle (None: the width of its output, which tells the
            label space and nothing more).

    The substitute's initial weights come from the attack's seeded generator inside a forked
    global RNG, so the attack is reproducible and the caller's RNG state is left as it was.
    The attacked model is only ever called under ``torch.no_grad``.

    Untargeted only, as in the paper: targeted examples transfer poorly from a substitute
    trained on a few hundred labels (25–50% hits on the digits model). On an undefended MNIST
    CNN (150 seeds, 4 rounds, ε = 0.3) a third of the FGSM examples transferred, against 5%
    for random-sign noise of the same size (the paper's MetaMind oracle: 84% after 6 rounds).
    ``early_stop`` is not used: the oracle's verdict on the substitute's examples is unknown.

    Example: ``x_adv = SubstituteTransfer(eps=0.3, rounds=4)(model, x, y)``
    """

    eps: float = 0.3
    attack: str = "fgsm"
    steps: int = 10
    substitute: str = "convnet"
    substitute_depth: int = 2
    substitute_width: float = 0.5
    seed_examples: int | None = 150
    rounds: int = 6
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    augment_step: float = 0.1
    flip_every: int | None = None
    num_classes: int | None = None

    name: ClassVar[str] = "substitute"
    untargeted_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_eps(self, self.eps, self._inner_norm())
        check_steps(self, "steps", self.steps)
        check_range(self, "substitute_depth", self.substitute_depth, minimum=1)
        check_range(self, "substitute_width", self.substitute_width, minimum=0.0, inclusive=False)
        if self.seed_examples is not None:
            check_count(self, "seed_examples", self.seed_examples)
        check_count(self, "rounds", self.rounds, minimum=0)
        check_count(self, "epochs", self.epochs)
        check_count(self, "batch_size", self.batch_size)
        check_range(self, "learning_rate", self.learning_rate, minimum=0.0, inclusive=False)
        check_range(self, "augment_step", self.augment_step, minimum=0.0)
        if self.flip_every is not None:
            check_range(self, "flip_every", self.flip_every, minimum=1)
        if self.num_classes is not None:
            check_range(self, "num_classes", self.num_classes, minimum=2)
        owner = type(self).__name__
        if self.attack == self.name:
            raise ValueError(f"{owner}.attack cannot be {self.name!r} itself")
        if self.substitute not in MODELS:
            raise ValueError(f"{owner}.substitute: unknown model {self.substitute!r}")
        if self.inner_attack().threat not in ("linf", "l2", "l1"):
            raise ValueError(
                f"{owner}.attack must be a norm-ball attack with an eps, got {self.attack!r}"
            )

    @property
    def threat(self) -> str:
        return self.inner_attack().threat

    def _inner_norm(self) -> str:
        """The norm of the inner attack, which is built with its default norm (only ``eps``
        and ``steps`` are passed on), so ``eps`` can be judged before it is built."""
        if self.attack not in ATTACKS:
            raise ValueError(f"{type(self).__name__}.attack: unknown attack {self.attack!r}")
        default = attack_parameters(self.attack).get("norm", ATTACKS.get(self.attack).THREAT)
        return str(default)

    def inner_attack(self, seed: int | None = None) -> Attack:
        """The white-box attack run on the substitute."""
        if self.attack not in ATTACKS:
            raise ValueError(f"{type(self).__name__}.attack: unknown attack {self.attack!r}")
        known = attack_parameters(self.attack)
        if "eps" not in known:
            raise ValueError(
                f"{type(self).__name__}.attack must be a norm-ball attack with an eps, got "
                f"{self.attack!r}"
            )
        params: dict[str, object] = {"eps": self.eps, "precision": self.precision}
        if "steps" in known:
            params["steps"] = self.steps
        if seed is not None:
            params["seed"] = seed
        try:
            return build_attack(self.attack, **params)
        except RobustlabError as error:
            raise ValueError(f"{type(self).__name__}.attack: {error}") from None

    def oracle_queries(self, count: int) -> int:
        """Inputs the oracle labels when the attack runs on a batch of ``count``."""
        seeds = count if self.seed_examples is None else min(count, self.seed_examples)
        return seeds << self.rounds

    def _perturb(
        self,
        context: AttackContext,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} builds an image substitute: x must be (N, C, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if len(x) == 0:
            return x.clone()
        seed = int(torch.randint(2**62, (1,), generator=context.generator))
        with _private_rng(x.device):
            torch.manual_seed(seed)
            substitute = self.train_substitute(context, x)
        inner = self.inner_attack(seed=seed % 2**31)
        return inner(substitute, x, y, target=target)

    def train_substitute(self, context: AttackContext, x: torch.Tensor) -> nn.Module:
        """Substitute training with Jacobian-based dataset augmentation (Algorithm 1)."""
        inputs = x[: self.seed_examples] if self.seed_examples is not None else x
        labels, classes = _oracle(context, inputs)
        classes = self.num_classes or classes
        substitute = self._build(inputs, classes)
        optimizer = torch.optim.Adam(substitute.parameters(), lr=self.learning_rate)
        self._train(substitute, optimizer, inputs, labels, context.generator)
        for round_index in range(self.rounds):
            step = self.augment_step
            if self.flip_every is not None and (round_index // self.flip_every) % 2 == 1:
                step = -step
            new_inputs = _augment(substitute, inputs, labels, step)
            new_labels, _ = _oracle(context, new_inputs)
            inputs = torch.cat([inputs, new_inputs])
            labels = torch.cat([labels, new_labels])
            self._train(substitute, optimizer, inputs, labels, context.generator)
        logger.info(
            "substitute %s trained on %d oracle-labelled inputs", self.substitute, len(inputs)
        )
        substitute.eval()
        return substitute

    def _build(self, inputs: torch.Tensor, classes: int) -> nn.Module:
        known = model_options(self.substitute)
        options: dict[str, object] = {}
        if "depth" in known:
            options["depth"] = self.substitute_depth
        if "width" in known:
            options["width"] = self.substitute_width
        if "dropout" in known and isinstance(known["dropout"], bool):
            options["dropout"] = False
        channels = inputs.shape[1]
        mean = inputs.mean(dim=(0, 2, 3))
        std = inputs.std(dim=(0, 2, 3)).clamp_min(1e-3) if len(inputs) > 1 else torch.ones(channels)
        shape = (channels, inputs.shape[2], inputs.shape[3])
        try:
            model = build_model(
                self.substitute,
                input_shape=shape,
                num_classes=classes,
                mean=mean.tolist(),
                std=std.tolist(),
                **options,
            )
        except RobustlabError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None
        return model.to(inputs.device)

    def _train(
        self,
        substitute: nn.Module,
        optimizer: torch.optim.Optimizer,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        substitute.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(inputs), generator=generator, device=generator.device)
            for start in range(0, len(inputs), self.batch_size):
                batch = order[start : start + self.batch_size].to(inputs.device)
                logits: torch.Tensor = substitute(inputs[batch])
                loss = F.cross_entropy(logits, labels[batch])
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()


def _oracle(context: AttackContext, inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The attacked model's labels for ``inputs`` (and its number of classes); nothing else."""
    labels, classes = [], 0
    with torch.no_grad():
        for start in range(0, len(inputs), ORACLE_CHUNK):
            logits = context.logits(inputs[start : start + ORACLE_CHUNK].detach())
            labels.append(logits.argmax(dim=1))
            classes = logits.shape[1]
    return torch.cat(labels), classes


def _augment(
    substitute: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, step: float
) -> torch.Tensor:
    """x + step·sign(∂F[O(x)]/∂x) for every x, clipped to [0, 1]: the paper's Eq. 4."""
    substitute.eval()
    points = inputs.detach().clone().requires_grad_(True)
    chosen = substitute(points).gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(chosen, points)
    return (inputs + step * grad.sign()).clamp(0.0, 1.0).detach()


@contextlib.contextmanager
def _private_rng(device: torch.device) -> Iterator[None]:
    """Fork the global RNGs (CPU and ``device``'s) and restore them on exit."""
    devices = [] if device.type == "cpu" else [device.index or 0]
    device_type = "cuda" if device.type == "cpu" else device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        yield

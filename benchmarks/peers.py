"""Peer libraries behind one calling convention, for cross-check tests and the attack benchmark.

Each peer (torchattacks, foolbox 3, ART, cleverhans 4) spells FGSM and PGD differently: step
size relative or absolute, labels as indices or one-hot, numpy or torch, loss summed or averaged.
``prepare_peer`` hides that, so a test or benchmark states one ``AttackSpec`` and runs it through
every installed peer with identical hyper-parameters. Peers are optional: ``installed_peers``
lists what imports here, and ``prepare_peer`` returns None where a peer lacks an attack.

The adapters call each peer's fastest documented entry point (for foolbox ``run``, which skips
the success bookkeeping of ``__call__``; for ART one batch of the whole input), so a benchmark
against them is not won by peer overhead that a user could avoid.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

PeerName = Literal["torchattacks", "foolbox", "art", "cleverhans"]
PEERS: dict[PeerName, tuple[str, str]] = {
    "torchattacks": ("torchattacks", "torchattacks"),
    "foolbox": ("foolbox", "foolbox"),
    "art": ("art", "adversarial-robustness-toolbox"),
    "cleverhans": ("cleverhans.torch.attacks.projected_gradient_descent", "cleverhans"),
}
"""Peer name -> (module to import, distribution whose version is reported)."""

PeerAttack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """One deterministic attack, in robustlab's units: ``alpha`` is an absolute step size.

    ``kind="bim"`` asks for the peer's BIM class where it has one (only torchattacks does);
    it is the same algorithm as ``pgd`` without random start.
    """

    kind: Literal["fgsm", "pgd", "bim"]
    eps: float
    alpha: float = 0.0
    steps: int = 1
    norm: Literal["linf", "l2"] = "linf"


def peer_version(peer: PeerName) -> str | None:
    """Installed version of ``peer``, or None when it is absent or fails to import."""
    module, distribution = PEERS[peer]
    # GitPython (imported by foolbox) raises at import if no git executable is found; quiet
    # makes that a later, irrelevant error instead: foolbox uses git only for its model zoo.
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(module)
        return importlib.metadata.version(distribution)
    except Exception:  # any import failure means "not usable here"
        return None


def installed_peers() -> dict[PeerName, str]:
    """Usable peers and their versions."""
    found = {peer: peer_version(peer) for peer in PEERS}
    return {peer: version for peer, version in found.items() if version is not None}


def prepare_peer(peer: PeerName, spec: AttackSpec, model: nn.Module) -> PeerAttack | None:
    """``attack(x, y) -> x_adv`` running ``spec`` through ``peer``; None if it has no such attack.

    Set-up (wrapping the model, building attack objects) happens here, outside any timing.
    """
    builder = _BUILDERS[peer]
    return builder(spec, model)


def _torchattacks(spec: AttackSpec, model: nn.Module) -> PeerAttack | None:
    import torchattacks

    attack: Any
    if spec.kind == "fgsm" and spec.norm == "linf":
        attack = torchattacks.FGSM(model, eps=spec.eps)
    elif spec.kind == "bim" and spec.norm == "linf":
        # torchattacks' BIM defaults alpha to 2/255 and treats steps=0 as "choose for me":
        # always pass both explicitly.
        attack = torchattacks.BIM(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps)
    elif spec.kind == "pgd" and spec.norm == "linf":
        attack = torchattacks.PGD(
            model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=False
        )
    elif spec.kind == "pgd" and spec.norm == "l2":
        attack = torchattacks.PGDL2(
            model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=False
        )
    else:
        return None

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = attack(x, y)
        return result

    return run


def _foolbox(spec: AttackSpec, model: nn.Module) -> PeerAttack | None:
    import foolbox

    fmodel = foolbox.PyTorchModel(model, bounds=(0.0, 1.0))
    attacks = foolbox.attacks
    attack: Any
    if spec.kind == "fgsm":
        fast = {"linf": attacks.LinfFastGradientAttack, "l2": attacks.L2FastGradientAttack}
        attack = fast[spec.norm](random_start=False)
    elif spec.kind == "pgd":
        pgd = {"linf": attacks.LinfPGD, "l2": attacks.L2PGD}
        attack = pgd[spec.norm](abs_stepsize=spec.alpha, steps=spec.steps, random_start=False)
    else:
        return None

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = attack.run(fmodel, x, y, epsilon=spec.eps)
        return result

    return run


def _art(spec: AttackSpec, model: nn.Module) -> PeerAttack | None:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    if spec.kind == "bim":
        return None
    norm: float = np.inf if spec.norm == "linf" else 2
    classifiers: dict[tuple[int, ...], Any] = {}

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[1:])
        if shape not in classifiers:  # ART wants the input shape and class count up front
            with torch.no_grad():
                classes = int(model(x[:1]).shape[1])
            classifiers[shape] = PyTorchClassifier(
                model=model,
                loss=nn.CrossEntropyLoss(),
                input_shape=shape,
                nb_classes=classes,
                clip_values=(0.0, 1.0),
                device_type="gpu" if x.is_cuda else "cpu",
            )
        classifier = classifiers[shape]
        attack: Any
        if spec.kind == "fgsm":
            attack = FastGradientMethod(classifier, norm=norm, eps=spec.eps, batch_size=len(x))
        else:
            attack = ProjectedGradientDescent(
                classifier,
                norm=norm,
                eps=spec.eps,
                eps_step=spec.alpha,
                max_iter=spec.steps,
                num_random_init=0,
                batch_size=len(x),
                verbose=False,
            )
        adversarial = attack.generate(x.cpu().numpy(), y.cpu().numpy())
        return torch.from_numpy(np.asarray(adversarial)).to(x.device)

    return run


def _cleverhans(spec: AttackSpec, model: nn.Module) -> PeerAttack | None:
    from cleverhans.torch.attacks.fast_gradient_method import fast_gradient_method
    from cleverhans.torch.attacks.projected_gradient_descent import projected_gradient_descent

    if spec.kind == "bim":
        return None
    norm: float = np.inf if spec.norm == "linf" else 2

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor
        if spec.kind == "fgsm":
            result = fast_gradient_method(model, x, spec.eps, norm, clip_min=0.0, clip_max=1.0, y=y)
        else:
            result = projected_gradient_descent(
                model,
                x,
                spec.eps,
                spec.alpha,
                spec.steps,
                norm,
                clip_min=0.0,
                clip_max=1.0,
                y=y,
                rand_init=False,
                sanity_checks=False,
            )
        return result.detach()

    return run


_BUILDERS: dict[PeerName, Callable[[AttackSpec, nn.Module], PeerAttack | None]] = {
    "torchattacks": _torchattacks,
    "foolbox": _foolbox,
    "art": _art,
    "cleverhans": _cleverhans,
}

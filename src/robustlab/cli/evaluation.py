"""Commands that measure a trained run: ``calibrate``, ``eval`` and ``attack``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from robustlab import data as datasets
from robustlab.attacks import build_attack
from robustlab.cli.checked import print_checked
from robustlab.cli.common import DATA_ROOT_HELP, app, parse_options
from robustlab.cli.console import console, print_table
from robustlab.cli.unbounded import attack_unbounded, check_unbounded
from robustlab.defenses import Gradients
from robustlab.device import resolve_device
from robustlab.errors import ConfigError
from robustlab.evaluate import RobustnessReport, evaluate_accuracy
from robustlab.evaluate.accuracy import require_positive
from robustlab.evaluate.checked import evaluate_with_checks
from robustlab.evaluate.on_run import attack_run
from robustlab.evaluate.sanity import CheckSettings
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory


@app.command()
def calibrate(
    run_dirs: list[Path] = typer.Argument(..., help="run directories of the models to pool"),
    target: float = typer.Option(0.56, help="success rate to reach (share of clean-correct)"),
    steps: int = typer.Option(200, help="PGD iterations"),
    n: int = typer.Option(1000, "--n", help="first N test images"),
    high: float = typer.Option(0.5, help="largest ε searched"),
    iterations: int = typer.Option(7, help="bisection steps (resolution high/2^iterations)"),
    refine: str = typer.Option(
        "target", help="target: halve only the brackets that decide ε; all: every one"
    ),
    phase: Optional[str] = typer.Option(None, help="weights at the end of this phase"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Find the ε at which PGD fools a target share of the models' test images."""
    from robustlab.attacks.iterative import PGD
    from robustlab.evaluate.calibration import calibrate as calibrate_models

    if not 0 < target < 1:
        raise ConfigError(f"--target must be in (0, 1), got {target}")
    if not 0 < high <= 1:
        raise ConfigError(f"--high (largest L∞ ε searched) must be in (0, 1], got {high}")
    require_positive("--n", n, "test images to calibrate on")
    require_positive("--iterations", iterations, "bisection steps")
    if refine not in ("target", "all"):
        raise ConfigError(f"--refine must be 'target' or 'all', got {refine!r}")
    attack = PGD(eps=1.0, steps=steps, early_stop=True, precision=precision)  # type: ignore[arg-type]
    chosen = resolve_device(device)
    trained = [load_trained_model(RunDirectory(path), chosen, phase=phase) for path in run_dirs]
    names = {t.info.name for t in trained}
    if len(names) != 1:
        raise ConfigError(f"the runs use different datasets ({', '.join(sorted(names))})")
    root = data_root or trained[0].config.data.root
    test = datasets.load_split(trained[0].info.name, "test", root)
    result = calibrate_models(
        [t.model for t in trained],
        test.images[:n].to(chosen),
        test.labels[:n].to(chosen),
        attack,
        target_success=target,
        high=high,
        iterations=iterations,
        refine="target" if refine == "target" else "all",
    )
    grid = [high * i / 10 for i in range(11)]
    print_table(
        f"PGD-{steps} success vs ε, pooled over {len(trained)} model(s), "
        f"{len(result.minimal_eps)} clean-correct examples",
        ["eps", "success found", "not ruled out"],
        [
            [f"{eps:.3f}", f"{found:.1%}", f"{possible:.1%}"]
            for eps, found, possible in result.curve(grid)
        ],
    )
    console.print(
        f"calibrated ε = {result.eps:.4f} ({255 * result.eps:.1f}/255) for {target:.0%} "
        f"success (resolution {result.resolution:.4f})"
    )


@app.command(name="eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="a run directory written by train or run"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    batch_size: int = typer.Option(1000, help="evaluation batch size"),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    attack_names: list[str] = typer.Option(
        [], "--attack", help="also report robust accuracy under this attack (repeatable)"
    ),
    eps: Optional[float] = typer.Option(None, help="budget for --attack, pixel units"),
    n: int = typer.Option(1000, "--n", help="first N test images for --attack"),
    checks: bool = typer.Option(
        True, "--checks/--no-checks", help="sanity checks with every attack (gradient masking)"
    ),
    naive: bool = typer.Option(
        False, "--naive", help="plain gradients through the run's defenses (default: adaptive)"
    ),
    bpda: bool = typer.Option(False, "--bpda", help="BPDA through non-differentiable defenses"),
    eot: int = typer.Option(0, "--eot", help="EOT draws (0: 10 for a random defense, else 1)"),
    joint: bool = typer.Option(False, "--joint", help="attack classifier and detectors jointly"),
) -> None:
    """Clean accuracy of a trained run on its test split; robust accuracy with --attack.

    A run with defenses (model.defenses) is evaluated as deployed, and attacked with the
    gradients its defenses call for (BPDA, EOT, joint) unless --naive or explicit flags say
    otherwise; the sanity checks run with every attack unless --no-checks.
    """
    require_positive("--batch-size", batch_size, "evaluation batch size")
    if attack_names:
        require_positive("--n", n, "test images to attack")
    elif eps is not None:
        raise ConfigError("--eps is the budget of --attack: name an attack, e.g. --attack pgd")
    budget = {} if eps is None else {"eps": eps}
    chosen = [build_attack(name, **budget) for name in attack_names]  # refused before any work
    run_directory = RunDirectory(run_dir)
    trained = load_trained_model(run_directory, resolve_device(device))
    data_config = trained.config.data.model_copy(
        update={"root": data_root or trained.config.data.root}
    )
    test = datasets.load_split(data_config.dataset, "test", data_config.root)
    result = evaluate_accuracy(trained.model, test.images, test.labels, batch_size=batch_size)
    print_table(
        f"{run_dir}",
        ["model", "dataset", "split", "images", "clean accuracy", "loss", "weights"],
        [
            [
                trained.config.model.name,
                trained.info.name,
                "test",
                result.count,
                f"{result.accuracy:.2%}",
                f"{result.loss:.4f}",
                Path(trained.weights).name,
            ]
        ],
    )
    explicit = naive or bpda or eot > 0 or joint
    gradients = Gradients(bpda=bpda, eot=max(eot, 1), joint=joint) if explicit else None
    if chosen and (checks or trained.config.model.defenses or explicit):
        print_checked(
            run_dir,
            evaluate_with_checks(
                run_directory,
                chosen,
                count=n,
                batch_size=min(batch_size, 256),
                device=resolve_device(device),
                gradients=gradients,
                settings=CheckSettings() if checks else CheckSettings(enabled=False),
                data_root=data_root,
            ),
        )
    elif chosen:
        outcome = attack_run(
            run_directory,
            chosen,
            count=n,
            batch_size=min(batch_size, 256),
            device=resolve_device(device),
            data_root=data_root,
        )
        _print_robustness(run_dir, outcome.report)
        console.print(f"results: {outcome.results_file}")


@app.command()
def attack(
    run_dir: Path = typer.Argument(..., help="a run directory written by train or run"),
    attack_name: str = typer.Option("pgd", "--attack", help="attack registry name"),
    eps: Optional[float] = typer.Option(None, help="budget ε in pixel units ([0, 1] scale)"),
    steps: Optional[int] = typer.Option(None, help="iterations"),
    alpha: Optional[float] = typer.Option(None, help="step size"),
    norm: Optional[str] = typer.Option(None, help="linf, l2 or l1 (where the attack has one)"),
    restarts: Optional[int] = typer.Option(None, help="random restarts"),
    loss: Optional[str] = typer.Option(None, help="ce, cw or dlr (where the attack has one)"),
    param: list[str] = typer.Option([], "--param", "-p", help="other parameter KEY=VALUE"),
    n: Optional[int] = typer.Option(
        None, "--n", help="first N test images (default 1000; 3 with --unbounded)"
    ),
    batch_size: int = typer.Option(256, help="attack batch size"),
    seed: int = typer.Option(0, help="attack seed"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast"),
    early_stop: bool = typer.Option(False, "--early-stop", help="stop on fooled examples"),
    save_examples: bool = typer.Option(False, "--save-examples", help="write a PNG grid"),
    unbounded: bool = typer.Option(
        False,
        "--unbounded",
        help="with --attack ilcm: ε = 1, aim at every class, draw a standard and a robust "
        "model side by side (the run's first phase vs its final weights, or --compare)",
    ),
    compare: Optional[Path] = typer.Option(
        None, help="with --unbounded: set this run's final weights beside RUN_DIR's"
    ),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Attack a trained run on its test split; print a table and save results JSON.

    With --unbounded (ILCM only): the images the targeted attack draws toward every class,
    for two models side by side (perceptual alignment, thesis Ch. 4.2).
    """
    if compare is not None and not unbounded:
        raise ConfigError("--compare sets a second model beside RUN_DIR's: add --unbounded")
    if unbounded:
        check_unbounded(
            attack_name,
            eps=eps,
            norm=norm,
            restarts=restarts,
            loss=loss,
            param=param,
            early_stop=early_stop,
        )
        attack_unbounded(
            run_dir,
            compare=compare,
            n=3 if n is None else n,
            steps=steps,
            alpha=alpha,
            seed=seed,
            precision=precision,
            batch_size=batch_size,
            save_examples=save_examples,
            data_root=data_root,
            device=device,
        )
        return
    n = 1000 if n is None else n
    require_positive("--n", n, "test images to attack")
    require_positive("--batch-size", batch_size, "images per attack batch")
    given = {
        "eps": eps,
        "steps": steps,
        "alpha": alpha,
        "norm": norm,
        "restarts": restarts,
        "loss": loss,
    }
    params = {key: value for key, value in given.items() if value is not None}
    params.update(parse_options(param, flag="--param"))
    params.update(seed=seed, precision=precision, early_stop=early_stop)
    chosen = build_attack(attack_name, **params)
    if chosen.targeted_only:
        raise ConfigError(
            f"--attack {attack_name} is targeted only (it needs a target class per image), and "
            "this command measures untargeted robust accuracy: call it from Python with "
            "target= (docs/attacks.md)"
        )
    outcome = attack_run(
        RunDirectory(run_dir),
        [chosen],
        count=n,
        batch_size=batch_size,
        device=resolve_device(device),
        data_root=data_root,
        save_examples=save_examples,
    )
    _print_robustness(run_dir, outcome.report)
    console.print(f"results: {outcome.results_file}")
    if outcome.examples_file is not None:
        console.print(f"examples: {outcome.examples_file}")


def _print_robustness(run_dir: Path, report: RobustnessReport) -> None:
    """One row per attack, plus the worst case over them when there are several."""
    rows = [
        [
            result.name,
            result.parameters["threat"],
            _budget_text(result.parameters),
            result.parameters.get("steps", "-"),
            result.parameters.get("restarts", "-"),
            f"{result.robust_accuracy:.2%}",
            f"{result.success_rate:.2%}",
            f"{result.seconds:.1f}s",
        ]
        for result in report.attacks
    ]
    if len(report.attacks) > 1:
        rows.append(
            [
                "worst case",
                "",
                "",
                "",
                "",
                f"{report.worst_case_accuracy:.2%}",
                f"{report.worst_case_success_rate:.2%}",
                "",
            ]
        )
    print_table(
        f"{run_dir}: first {report.count} test images, clean accuracy {report.clean_accuracy:.2%}",
        ["attack", "norm", "eps", "steps", "restarts", "robust acc", "success", "time"],
        rows,
    )


def _budget_text(parameters: dict[str, Any]) -> str:
    eps = parameters.get("eps")
    return "-" if eps is None else f"{eps:g}"

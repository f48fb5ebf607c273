"""The ``robustlab`` command: train, run, sweep, report, eval, attack, data, models, kinds.

Every user error is a RobustlabError whose message is printed without a traceback (exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from robustlab import data as datasets
from robustlab.attacks import build_attack
from robustlab.cli.console import ConsoleReporter, console, errors, print_table
from robustlab.cli.fhe import fhe_app
from robustlab.config import (
    DataConfig,
    ExecutorConfig,
    ExperimentConfig,
    TrialConfig,
    load_experiment,
    parse_config,
)
from robustlab.device import resolve_device
from robustlab.errors import ConfigError, RobustlabError
from robustlab.evaluate import RobustnessReport, evaluate_accuracy
from robustlab.evaluate.on_run import attack_run
from robustlab.experiments import run_experiment
from robustlab.models import MODELS, build_model, count_parameters
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory
from robustlab.train import train_trial

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Attacks, defenses and capacity experiments for robust deep learning.",
)
data_app = typer.Typer(no_args_is_help=True, help="List, verify and download datasets.")
app.add_typer(data_app, name="data")
sweep_app = typer.Typer(no_args_is_help=True, help="Inspect an experiment's trials.")
app.add_typer(sweep_app, name="sweep")
app.add_typer(fhe_app, name="fhe")  # concrete-python is imported only when a command needs it

DATA_ROOT_HELP = "data root (default: $ROBUSTLAB_DATA, else ~/.cache/robustlab)"


@app.command()
def train(
    model: str = typer.Option(
        "thesis-shallow", help="model registry name (see `robustlab models`)"
    ),
    dataset: str = typer.Option("digits", help="dataset name (see `robustlab data list`)"),
    epochs: int = typer.Option(12, help="epochs of standard training"),
    batch_size: int = typer.Option(128, help="training batch size"),
    optimizer: str = typer.Option("adam", help="sgd, adam or adamw"),
    lr: float = typer.Option(1e-3, help="learning rate"),
    momentum: float = typer.Option(0.9, help="SGD momentum"),
    weight_decay: float = typer.Option(0.0, help="weight decay"),
    schedule: str = typer.Option("constant", help="constant, cosine, step, multistep, cyclic"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast"),
    option: list[str] = typer.Option([], "--option", "-o", help="model option KEY=VALUE"),
    seed: int = typer.Option(0, help="seed for initialisation, shuffling and dropout"),
    run_dir: Optional[Path] = typer.Option(None, help="run directory (default runs/train/NAME)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --run-dir"),
) -> None:
    """Train one model with standard training and write a run directory."""
    trial_name = f"{model}-{dataset}-s{seed}"
    raw: dict[str, Any] = {
        "experiment": "train",
        "trial": trial_name,
        "data": {"dataset": dataset, "root": data_root},
        "model": {"name": model, "options": _parse_options(option)},
        "seed": seed,
        "device": device,
        "phases": [
            {
                "name": "clean",
                "epochs": epochs,
                "objective": "standard",
                "batch_size": batch_size,
                "precision": precision,
                "optimizer": {
                    "type": optimizer,
                    "lr": lr,
                    "momentum": momentum,
                    "weight_decay": weight_decay,
                },
                "schedule": {"type": schedule},
            }
        ],
    }
    config: TrialConfig = parse_config(TrialConfig, raw, source="command-line options")
    directory = run_dir or Path("runs") / "train" / trial_name
    result = train_trial(config, directory, resume=resume, reporter=ConsoleReporter())
    _print_results([RunDirectory(result.run_dir).read_results()])
    console.print(f"run directory: {result.run_dir}")


@app.command()
def run(
    config_file: Path = typer.Argument(..., help="experiment YAML, e.g. configs/quickstart.yaml"),
    out: Path = typer.Option(Path("runs"), help="parent of the experiment directory"),
    dataset: Optional[str] = typer.Option(None, help="override data.dataset (drops fallbacks)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: Optional[str] = typer.Option(None, help="override device"),
    jobs: Optional[int] = typer.Option(
        None,
        min=1,
        max=64,
        help="override jobs: trials run side by side, each with an equal share of the CPU "
        "threads",
    ),
    executor: Optional[str] = typer.Option(
        None, help="override executor: serial, processes or ray"
    ),
    address: Optional[str] = typer.Option(
        None, help="with --executor ray: a cluster's address (default: start a local Ray)"
    ),
) -> None:
    """Run (or resume) every trial of an experiment config and print the results."""
    config = load_experiment(config_file)
    config = _override_experiment(config, dataset=dataset, data_root=data_root, device=device)
    if jobs is not None:
        config = config.model_copy(update={"jobs": jobs})
    if executor is not None or address is not None:
        chosen = parse_config(
            ExecutorConfig,
            {"type": executor or config.executor.type, "address": address},
            source="--executor/--address",
        )
        config = config.model_copy(update={"executor": chosen})
    result = run_experiment(config, out, reporter=ConsoleReporter())
    _print_results(result.trials)
    console.print(f"experiment directory: {result.directory}")
    if result.report is not None:
        console.print(f"report: {result.report}")


@sweep_app.command("status")
def sweep_status(
    experiment: Path = typer.Argument(
        ..., help="an experiment folder (runs/NAME), or a NAME under --out"
    ),
    out: Path = typer.Option(Path("runs"), help="where to look for a bare NAME"),
) -> None:
    """Every trial of the experiment's plan: done, running, failed or pending."""
    from robustlab.experiments.status import trial_statuses

    directory = experiment if experiment.is_dir() else out / experiment
    statuses = trial_statuses(directory)
    rows = [
        [
            status.name,
            status.status,
            status.point,
            f"{status.seconds / 60:.1f}" if status.seconds is not None else "",
            status.result,
        ]
        for status in statuses
    ]
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.status] = counts.get(status.status, 0) + 1
    totals = ", ".join(f"{count} {name}" for name, count in counts.items())
    print_table(
        f"{directory}: {totals}",
        ["trial", "status", "sweep point", "minutes", "result"],
        rows,
    )


@app.command()
def kinds() -> None:
    """List the experiment kinds (the config's kind:)."""
    from robustlab.experiments.kinds import KINDS

    print_table(
        "experiment kinds",
        ["name", "report options", "description"],
        [
            [entry.name, ", ".join(entry.value.options.model_fields), entry.description]
            for entry in KINDS.entries()
        ],
    )


@app.command()
def report(
    experiment_dir: Path = typer.Argument(..., help="an experiment folder written by run"),
    export: Optional[Path] = typer.Option(
        None,
        help="also write report.md, report.csv and figures/ here (e.g. docs/results/NAME): "
        "the committed results file a doc's figures come from",
    ),
) -> None:
    """Write the experiment's report (Markdown, CSV, PNG figures, one HTML page) and print
    its tables."""
    from robustlab.experiments.reporting import build_report, export_report, write_report

    built = build_report(experiment_dir)
    page = write_report(built, experiment_dir / "report")
    if export is not None:
        console.print(f"exported: {export_report(built, export)}")
    for section in built.all_sections:
        for table in section.tables:
            print_table(table.title, table.columns, table.rows)
        for callout in section.callouts:
            console.print(f"{callout.lead}: {callout.text}")
    for paragraph in built.paragraphs:
        console.print(paragraph)
    if built.missing:
        console.print(f"not finished (left out): {', '.join(built.missing)}")
    console.print(f"report: {page} (also report.md, report.csv, figures/)")


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
    if refine not in ("target", "all"):
        raise ConfigError(f"--refine must be 'target' or 'all', got {refine!r}")
    chosen = resolve_device(device)
    trained = [load_trained_model(RunDirectory(path), chosen, phase=phase) for path in run_dirs]
    names = {t.info.name for t in trained}
    if len(names) != 1:
        raise ConfigError(f"the runs use different datasets ({', '.join(sorted(names))})")
    root = data_root or trained[0].config.data.root
    test = datasets.load_split(trained[0].info.name, "test", root)
    attack = PGD(eps=1.0, steps=steps, early_stop=True, precision=precision)  # type: ignore[arg-type]
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
) -> None:
    """Clean accuracy of a trained run on its test split; robust accuracy with --attack."""
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
    if attack_names:
        budget = {} if eps is None else {"eps": eps}
        chosen = [build_attack(name, **budget) for name in attack_names]
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
    n: int = typer.Option(1000, "--n", help="first N test images"),
    batch_size: int = typer.Option(256, help="attack batch size"),
    seed: int = typer.Option(0, help="attack seed"),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast"),
    early_stop: bool = typer.Option(False, "--early-stop", help="stop on fooled examples"),
    save_examples: bool = typer.Option(False, "--save-examples", help="write a PNG grid"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N"),
) -> None:
    """Attack a trained run on its test split; print a table and save results JSON."""
    given = {
        "eps": eps,
        "steps": steps,
        "alpha": alpha,
        "norm": norm,
        "restarts": restarts,
        "loss": loss,
    }
    params = {key: value for key, value in given.items() if value is not None}
    params.update(_parse_options(param, flag="--param"))
    params.update(seed=seed, precision=precision, early_stop=early_stop)
    chosen = build_attack(attack_name, **params)
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


@app.command()
def models(
    input_shape: str = typer.Option("1,28,28", help="C,H,W used to count parameters"),
    num_classes: int = typer.Option(10, help="classes used to count parameters"),
) -> None:
    """List the model registry with parameter counts."""
    shape = _parse_shape(input_shape)
    rows = []
    for entry in MODELS.entries():
        model = build_model(
            entry.name,
            input_shape=shape,
            num_classes=num_classes,
            mean=[0.5] * shape[0],
            std=[0.5] * shape[0],
        )
        rows.append([entry.name, f"{count_parameters(model):,}", entry.description])
    print_table(
        f"models (parameters for input {input_shape}, {num_classes} classes)",
        ["name", "parameters", "description"],
        rows,
    )


@data_app.command("list")
def data_list(data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP)) -> None:
    """Which datasets are present, and where."""
    root = datasets.resolve_data_root(data_root)
    rows = []
    for status in datasets.dataset_status(data_root):
        where = "built in" if not status.needs_files else (status.location or "-")
        rows.append([status.name, "yes" if status.present else "no", where])
    print_table(f"datasets (data root {root})", ["name", "present", "location"], rows)


@data_app.command("verify")
def data_verify(
    names: list[str] = typer.Argument(None, help="datasets to verify (default: all present)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Check every file's checksum; exit 1 if any present file is corrupt or missing."""
    if not names:
        names = [s.name for s in datasets.dataset_status(data_root) if s.present and s.needs_files]
    rows = []
    bad = 0
    for name in names:
        for check in datasets.verify_dataset(name, data_root):
            bad += check.status != "ok"
            rows.append([name, str(check.path), check.status, check.detail])
    print_table("checksums", ["dataset", "file", "status", "detail"], rows)
    if bad:
        errors.print(f"{bad} file(s) failed verification")
        raise typer.Exit(1)


@data_app.command("download")
def data_download(
    name: str = typer.Argument(..., help="dataset to download"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    mirror: list[str] = typer.Option([], help="base URL to try instead of the defaults"),
) -> None:
    """Download a dataset's canonical files into the data root and verify them."""
    paths = datasets.download_dataset(name, data_root, mirrors=mirror or None)
    for path in paths:
        console.print(f"ok  {path}")
    if not paths:
        console.print(f"{name}: nothing to download")


def _override_experiment(
    config: ExperimentConfig,
    *,
    dataset: str | None,
    data_root: Path | None,
    device: str | None,
) -> ExperimentConfig:
    data = config.data
    name = config.name
    if dataset is not None:
        data = DataConfig(dataset=dataset, fallback=[], root=data.root)
        name = f"{config.name}-{dataset}"  # keep runs on different datasets apart
    if data_root is not None:
        data = data.model_copy(update={"root": data_root})
    return config.model_copy(update={"name": name, "data": data, "device": device or config.device})


def _parse_options(pairs: list[str], flag: str = "--option") -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} depth=4")
        options[key] = yaml.safe_load(value)
    return options


def _print_robustness(run_dir: Path, report: RobustnessReport) -> None:
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


def _parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        c, h, w = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"--input-shape {text!r}: expected C,H,W, e.g. 1,28,28") from None
    return c, h, w


def _print_results(results: list[dict[str, Any]]) -> None:
    rows = []
    for result in results:
        final = result["final"]
        rows.append(
            [
                result["trial"],
                result["model"],
                f"{result['parameters']:,}",
                result["dataset"],
                result["epochs"],
                f"{final.get('train_eval_acc', final['train_acc']):.2%}",
                f"{final['test_acc']:.2%}",
                f"{result['train_seconds']:.0f}s",
            ]
        )
    print_table(
        "results (clean accuracy; train = eval-mode accuracy on the train subset)",
        ["trial", "model", "params", "dataset", "epochs", "train acc", "test acc", "train time"],
        rows,
    )


def main() -> None:
    try:
        app()
    except RobustlabError as error:
        errors.print(f"[bold red]error:[/] {error}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted; rerun with --resume to continue from the last checkpoint")
        sys.exit(130)

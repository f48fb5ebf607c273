"""``robustlab fhe``: compile a trained run into an encrypted classifier, run it, re-measure
Table 3.1, and serve it over HTTP or query such a server.

Mounted in ``robustlab.cli`` as ``robustlab fhe``, whose ``main`` turns robustlab errors into
one-line messages. A missing ``fhe`` extra is reported here, before any work, with the hint
printed as text: as rich markup, ``pip install 'robustlab[fhe]'`` would lose its ``[fhe]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import typer
from rich.markup import escape

from robustlab.cli.console import console, errors, print_table
from robustlab.crypto.artifact import artifact_digest, compile_artifact, read_manifest
from robustlab.crypto.backend import ROUNDINGS, CompileOptions, Rounding, require_concrete
from robustlab.crypto.errors import MissingBackendError
from robustlab.crypto.measure import (
    encrypted_run,
    float_accuracy,
    float_latency,
    integer_latency,
    simulated_accuracy,
)
from robustlab.crypto.network import IntegerNetwork
from robustlab.crypto.quantize import QuantSpec, quantize
from robustlab.data import load_split
from robustlab.errors import ConfigError
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.loading import load_trained_model
from robustlab.store.runs import RunDirectory

fhe_app = typer.Typer(
    no_args_is_help=True,
    help="Encrypted inference (TFHE, concrete-python): compile, run, table, serve, query.",
)

DATA_ROOT_HELP = "data root (default: the run's, else $ROBUSTLAB_DATA, else ~/.cache/robustlab)"


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def require_extra(*checks: Callable[[], object]) -> None:
    """Stop before any work when the fhe extra is missing, printing its install hint as text."""
    try:
        for check in checks:
            check()
    except MissingBackendError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None


@fhe_app.command("compile")
def compile_command(
    run_dir: Path = typer.Argument(..., help="a run directory written by `robustlab train`"),
    bits: int = typer.Option(4, "--bits", help="weight bits (signed)"),
    activation_bits: int = typer.Option(4, help="activation bits (table outputs)"),
    input_bits: int = typer.Option(2, help="pixel bits (1: black and white)"),
    lookup_bits: int = typer.Option(5, help="table input bits after exact rounding (<= 8)"),
    per_layer: bool = typer.Option(False, "--per-layer", help="one weight scale per layer"),
    ranges: str = typer.Option(
        "calibrated",
        help="accumulator ranges: 'calibrated' (training images + margin; images beyond are "
        "detected) or 'worst-case' (exact for every input, coarser tables)",
    ),
    margin: float = typer.Option(0.1, help="calibrated ranges widened by this share of span"),
    global_rounding: bool = typer.Option(
        False, "--global-rounding", help="one rounding for all channels (else per channel)"
    ),
    rounding: str = typer.Option(
        "exact",
        help="'exact' (decrypts to the plain integer logits; one bootstrap per removed bit) or "
        "'approximate' (one bootstrap per table, ~4x faster; logits near rounding boundaries "
        "may differ: accuracy is measured by simulation on the whole test set)",
    ),
    finetune_epochs: int = typer.Option(0, help="quantisation-aware fine-tuning epochs"),
    finetune_lr: float = typer.Option(1e-3, help="fine-tuning learning rate"),
    finetune_noise: float = typer.Option(
        0.0,
        help="fine-tuning noise on accumulators, in rounding steps, so the network tolerates "
        "approximate rounding (0.13 matches concrete 2.11's errors)",
    ),
    calibration: int = typer.Option(5000, help="training images used for calibration"),
    inputset: int = typer.Option(100, help="training images concrete traces the circuit on"),
    out: Optional[Path] = typer.Option(None, help="artifact directory (default RUN_DIR/fhe)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Quantise a trained model into an integer network and compile it for TFHE."""
    require_extra(require_concrete)
    from robustlab.crypto.qat import FinetuneConfig, finetune

    options = CompileOptions(rounding=_rounding(rounding))
    if finetune_noise < 0 or (finetune_noise > 0 and finetune_epochs < 1):
        raise ConfigError(
            f"--finetune-noise must be >= 0 and needs --finetune-epochs >= 1, got "
            f"{finetune_noise} with {finetune_epochs} epoch(s)"
        )
    spec = QuantSpec(
        weight_bits=bits,
        activation_bits=activation_bits,
        input_bits=input_bits,
        lookup_bits=lookup_bits,
        per_channel=not per_layer,
        ranges=_ranges(ranges),
        margin=margin,
        per_channel_rounding=not global_rounding,
    )
    trained = load_trained_model(RunDirectory(run_dir), torch.device("cpu"))
    name = trained.info.name
    root = data_root or trained.config.data.root
    train = load_split(name, "train", root)
    test = load_split(name, "test", root)
    model = trained.model
    cal = train.images[:calibration]
    meta = {
        "run": str(run_dir),
        "dataset": name,
        "finetune_epochs": finetune_epochs,
        "finetune_noise": finetune_noise,
    }
    if finetune_epochs > 0:
        config = FinetuneConfig(
            epochs=finetune_epochs, lr=finetune_lr, rounding_noise=finetune_noise
        )
        tuned = finetune(model, train.images, train.labels, spec, config, calibration=cal)
        model, network = tuned.model, replace(tuned.network, meta={**tuned.network.meta, **meta})
    else:
        network = quantize(model, cal, spec, meta=meta)
    _, test_inside = network.checked_logits(test.images)
    accuracy: dict[str, Any] = {
        "float": float_accuracy(trained.model, test.images, test.labels),
        "finetuned_float": float_accuracy(model, test.images, test.labels)
        if finetune_epochs > 0
        else None,
        "integer": float((network.predict(test.images) == test.labels.numpy()).mean()),
        "test_images": len(test),
        "test_images_out_of_range": int((~test_inside).sum()),
    }
    traced = network.quantize_inputs(train.images[:inputset])
    if not options.exact:
        accuracy["simulated"] = simulated_accuracy(network, traced, test.images, test.labels)
    directory = out or run_dir / "fhe"
    started = time.perf_counter()
    manifest = compile_artifact(
        directory,
        network,
        traced,
        options,
        extra={
            "dataset": name,
            "run": str(run_dir.resolve()),
            "accuracy": accuracy,
            "finetune_epochs": finetune_epochs,
        },
    )
    compile_s = time.perf_counter() - started
    stats, summary = manifest["statistics"], manifest["summary"]
    print_table(
        f"{run_dir} → {directory}",
        ["float acc", "integer acc", "out of range", "lookups", "PBS", "keys (bsk+ksk)", "compile"],
        [
            [
                f"{accuracy['float']:.2%}",
                f"{accuracy['integer']:.2%}",
                f"{accuracy['test_images_out_of_range']}/{len(test)}",
                summary["lookups_per_image"],
                stats["programmable_bootstraps"],
                format_mib(stats["bootstrap_key_bytes"] + stats["keyswitch_key_bytes"]),
                f"{compile_s:.1f}s",
            ]
        ],
    )
    if not options.exact:
        simulated = accuracy["simulated"]
        console.print(
            f"approximate rounding: {simulated['accuracy']:.2%} of the test set by simulation "
            f"(same class as the plain network on {simulated['same_class']:.2%}, same logits "
            f"on {simulated['identical']:.2%})"
        )
    console.print(
        f"artifact digest {artifact_digest(directory)} (sha256 of its manifest, which records "
        "every file's; pin it with `fhe serve --artifact-digest`)"
    )


def _ranges(value: str) -> Literal["calibrated", "worst-case"]:
    if value == "calibrated":
        return "calibrated"
    if value == "worst-case":
        return "worst-case"
    raise ConfigError(f"--ranges must be 'calibrated' or 'worst-case', got {value!r}")


def _rounding(value: str) -> Rounding:
    if value not in ROUNDINGS:
        raise ConfigError(f"--rounding must be 'exact' or 'approximate', got {value!r}")
    return value


def first_test_images(
    manifest: dict[str, Any], count: int, data_root: Path | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if count < 1:
        raise ConfigError(f"--n must be >= 1, got {count}")
    dataset = manifest.get("dataset")
    if not dataset:
        raise ConfigError("the artifact does not name its dataset; recompile with `fhe compile`")
    test = load_split(str(dataset), "test", data_root)
    return test.images[:count], test.labels[:count]


@fhe_app.command("run")
def run_command(
    artifact: Path = typer.Argument(..., help="an artifact written by `robustlab fhe compile`"),
    n: int = typer.Option(20, "--n", help="first N test images"),
    seed: Optional[int] = typer.Option(None, help="key seed (reproducible keys, tests only)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Encrypt, evaluate and decrypt test images; check them against the plain network."""
    require_extra(require_concrete)
    manifest = read_manifest(artifact)
    images, labels = first_test_images(manifest, n, data_root)
    result = encrypted_run(artifact, images, labels, seed=seed)
    atomic_write_json(artifact / "run.json", {**result.as_dict(), "provenance": provenance()})
    print_table(
        f"{artifact}: {result.images} encrypted test images",
        [
            "accuracy",
            "plain acc",
            "bit-identical",
            "same class",
            "out of range",
            "keygen",
            "encrypt",
            "first run",
            "run",
            "decrypt",
        ],
        [
            [
                f"{result.accuracy:.2%}",
                f"{result.plain_accuracy:.2%}",
                f"{result.agreement:.2%}",
                f"{result.argmax_agreement:.2%}",
                str(len(result.out_of_range)),
                format_seconds(result.keygen_s),
                format_seconds(result.encrypt_s),
                format_seconds(result.first_run_s),
                format_seconds(result.run_s),
                format_seconds(result.decrypt_s),
            ]
        ],
    )
    console.print(
        f"evaluation keys {format_mib(result.evaluation_key_bytes)}, encrypted image "
        f"{format_mib(result.input_bytes)}, encrypted logits {format_mib(result.output_bytes)}"
    )
    if result.out_of_range:
        console.print(
            f"{len(result.out_of_range)} image(s) left the compiled ranges (not checked for "
            f"bit-identity, not counted as agreeing): {result.out_of_range}"
        )
    if result.mismatches and result.rounding == "approximate":
        console.print(
            f"approximate rounding: logits differ from the plain network on images "
            f"{result.mismatches} (expected near rounding boundaries; not an error)"
        )
    elif result.mismatches:
        errors.print(
            f"decrypted logits differ from the plain network on images {result.mismatches}"
        )
        raise typer.Exit(1)


@fhe_app.command("table")
def table_command(
    artifact: Path = typer.Argument(..., help="an artifact written by `robustlab fhe compile`"),
    n: int = typer.Option(5, "--n", help="encrypted test images"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
) -> None:
    """Table 3.1 re-measured here: plain float, plain integer and encrypted, per image."""
    require_extra(require_concrete)
    manifest = read_manifest(artifact)
    dataset = str(manifest.get("dataset"))
    test = load_split(dataset, "test", data_root)
    network = IntegerNetwork.load(artifact / "network.npz")
    trained = load_trained_model(RunDirectory(Path(manifest["run"])), torch.device("cpu"))
    timing = test.images[:200]
    rows: list[dict[str, Any]] = [
        {
            "system": "plain float (PyTorch)",
            "accuracy": float_accuracy(trained.model, test.images, test.labels),
            "images": len(test),
            "seconds_per_image": float_latency(trained.model, timing),
        },
        {
            "system": "plain integer (numpy)",
            "accuracy": float((network.predict(test.images) == test.labels.numpy()).mean()),
            "images": len(test),
            "seconds_per_image": integer_latency(network, timing),
        },
    ]
    result = encrypted_run(artifact, test.images[:n], test.labels[:n])
    rows.append(
        {
            "system": "encrypted (TFHE, concrete-python)",
            "accuracy": result.accuracy,
            "images": result.images,
            "seconds_per_image": result.run_s,
            "client_seconds_per_image": result.encrypt_s + result.decrypt_s,
            "keygen_s": result.keygen_s,
            "first_run_s": result.first_run_s,
            "bit_identical": result.agreement,
            "same_class": result.argmax_agreement,
            "rounding": result.rounding,
            "out_of_range": len(result.out_of_range),
        }
    )
    atomic_write_json(
        artifact / "table-3-1.json",
        {"rows": rows, "encrypted": result.as_dict(), "provenance": provenance()},
    )
    print_table(
        f"Table 3.1 re-measured ({dataset}, {manifest['summary']['lookups_per_image']} lookups)",
        ["system", "accuracy", "images", "time per image"],
        [
            [
                r["system"],
                f"{r['accuracy']:.2%}",
                r["images"],
                format_seconds(r["seconds_per_image"]),
            ]
            for r in rows
        ],
    )
    console.print(
        f"thesis: 0.1 ms in the clear, 300 s encrypted; keygen {result.keygen_s:.1f}s, "
        f"first encrypted run {result.first_run_s:.2f}s (warm-up, not in the average), "
        f"evaluation keys {format_mib(result.evaluation_key_bytes)}, {result.rounding} rounding, "
        f"bit-identical {result.agreement:.0%}, same class {result.argmax_agreement:.0%}"
    )
    simulated = manifest.get("accuracy", {}).get("simulated")
    if simulated is not None:
        console.print(
            f"whole test set through the approximate circuit, simulated: "
            f"{simulated['accuracy']:.2%}"
        )

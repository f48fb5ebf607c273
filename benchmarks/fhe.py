"""Encrypted inference measured: Table 3.1 re-measured, the width × bit-width trade-off, and
robustness through quantisation.

Run: ``python benchmarks/fhe.py`` (needs the fhe extra and MNIST/Fashion-MNIST under the data
root; ``--quick`` for a smoke run). Results: ``benchmarks/results/fhe.json``.

1. **Trade-off** (MNIST): for each hidden width a 784→width→10 MLP is trained, then for each
   bit-width setting quantised post-training (PTQ) and with quantisation-aware fine-tuning
   (QAT, scales fixed), compiled with concrete-python and run encrypted on a few test images:
   float / PTQ / QAT accuracy on the whole test set, test images outside the calibrated
   ranges, bootstraps, concrete's cost estimate, key sizes, keygen, per-image latency and
   bit-identity with the plain integer network.
2. **Chosen configuration** (``CHOSEN``: the fastest found at ≥ 97% MNIST integer accuracy
   within 1.5 points of its float model) on MNIST and Fashion-MNIST with more encrypted
   images: Table 3.1's rows (plain float, plain integer, encrypted), and the same network with
   worst-case ranges for comparison.
3. **Rounding** (``ROUNDING_ENTRIES``): one QAT network compiled with exact rounding (one
   bootstrap per removed bit; decrypts to the plain integer logits) and with approximate
   rounding (one bootstrap per table; logits may differ near rounding boundaries), encrypted
   side by side; the approximate circuit's whole-test-set accuracy by concrete's simulation.
4. **Robustness**: a PGD-trained MLP of the chosen width; its integer networks (PTQ, QAT,
   worst-case ranges) classify PGD images made on the float model; images that leave the
   calibrated ranges are counted (their encrypted result could differ from the plain one).

Duration: 12.5 minutes for sections 1, 2 and 4 on the quiet 2-core AVX-512 machine
(2026-12-02); section 3 alone took 15 minutes on a 2-core machine without AVX-512 (about 2.75×
slower at TFHE). Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks import PGD
from robustlab.crypto import IntegerNetwork, QuantSpec, quantize
from robustlab.crypto.artifact import compile_artifact
from robustlab.crypto.backend import ROUNDINGS, CompileOptions, Rounding
from robustlab.crypto.measure import (
    encrypted_run,
    float_accuracy,
    float_latency,
    integer_latency,
    simulated_accuracy,
)
from robustlab.crypto.qat import FinetuneConfig, finetune
from robustlab.crypto.robustness import integer_robustness
from robustlab.data import Split, dataset_info, load_split
from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance

# -- hyper-parameters ---------------------------------------------------------------------------
EPOCHS = 30  # float training of each MLP (Adam, one-cycle, batch 128)
BATCH = 128
MAX_LR = 3e-3
CALIBRATION = 5000  # training images that set scales and accumulator ranges (never test images)
INPUTSET = 100  # training images concrete traces the circuit on
FINETUNE = FinetuneConfig(epochs=5, lr=1e-3)  # QAT through the integer network, scales fixed
# worst-case ranges round so coarsely that lr 1e-3 wrecks the network (MNIST 48 W4 A4 I2 L5:
# PTQ 92.0% → 83.5%); 1e-4 for 3 epochs gains a point (93.3%)
WORST_CASE_FINETUNE = FinetuneConfig(epochs=3, lr=1e-4)
TARGET = 0.97  # the MNIST integer accuracy for the headline row
TOLERANCE = 0.015  # ... within 1.5 points of the float model
# DATASET:WIDTH:W,A,I,L (weight, activation, input, lookup bits), calibrated ranges (margin
# 0.1 of the span), per-channel rounding. The first is the headline row (and the robustness
# model): the fastest setting found at >= 97% MNIST. Fashion-MNIST needs finer inputs and tables
# to stay within 1.5 points, so it is measured at the headline setting and at the one that does.
CHOSEN = ["mnist:48:4,4,2,5", "fashion-mnist:48:4,4,2,5", "fashion-mnist:48:4,4,3,6"]
MARGIN = 0.1
WIDTHS = [16, 32, 48, 64]
SPECS = ["3,3,1,5", "4,4,2,5", "4,4,2,6"]
TRADE_OFF_IMAGES = 3  # encrypted test images per trade-off setting (latency, bit-identity)
TABLE_IMAGES = 20  # encrypted test images for the chosen configuration
# exact vs approximate rounding, side by side on one QAT network per entry
ROUNDING_ENTRIES = ["mnist:48:4,4,2,5", "mnist:64:4,4,2,5"]
ROUNDING_IMAGES = 20
ROUNDING_NOISE = 0.13  # QAT accumulator noise (rounding steps) matching concrete 2.11's errors
ADVERSARIAL_EPS = 0.1  # PGD budget (pixels) for the adversarially trained model
ADVERSARIAL_STEPS = 10  # PGD steps while training it; evaluation uses 50
ROBUST_IMAGES = 1000


def parse_spec(text: str, ranges: str = "calibrated") -> QuantSpec:
    weight, activation, inputs, lookup = (int(v) for v in text.split(","))
    return QuantSpec(
        weight,
        activation,
        inputs,
        lookup,
        ranges="worst-case" if ranges == "worst-case" else "calibrated",
        margin=MARGIN,
    )


def train_mlp(
    train: Split, name: str, width: int, *, epochs: int = EPOCHS, adversarial: PGD | None = None
) -> Any:
    torch.manual_seed(0)
    info = dataset_info(name)
    model = build_model(
        "mlp",
        input_shape=info.input_shape,
        num_classes=info.num_classes,
        mean=info.mean,
        std=info.std,
        depth=1,
        width=width,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=MAX_LR / 10)
    steps = epochs * ((len(train) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=steps)
    for _ in range(epochs):
        order = torch.randperm(len(train))
        for start in range(0, len(train), BATCH):
            batch = order[start : start + BATCH]
            x, y = train.images[batch], train.labels[batch]
            if adversarial is not None:
                model.eval()
                x = adversarial(model, x, y)
            model.train()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    return model.eval()


def integer_accuracy(network: IntegerNetwork, test: Split) -> tuple[float, int]:
    """Test accuracy and the number of test images outside the calibrated ranges."""
    logits, inside = network.checked_logits(test.images)
    return float((logits.argmax(1) == test.labels.numpy()).mean()), int((~inside).sum())


def encrypted(
    network: IntegerNetwork, train: Split, test: Split, images: int, rounding: Rounding = "exact"
) -> dict[str, Any]:
    """Compile, then run ``images`` test images through the real client/server protocol."""
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        manifest = compile_artifact(
            directory,
            network,
            network.quantize_inputs(train.images[:INPUTSET]),
            CompileOptions(rounding=rounding),
        )
        compile_s = time.perf_counter() - started
        run = encrypted_run(directory, test.images[:images], test.labels[:images])
    return {
        "summary": manifest["summary"],
        "statistics": manifest["statistics"],
        "compile_s": compile_s,
        "encrypted": run.as_dict(),
    }


def setting(
    model: Any, name: str, train: Split, test: Split, width: int, spec: QuantSpec, images: int
) -> tuple[dict[str, Any], IntegerNetwork]:
    """One row: PTQ and QAT accuracies, then the QAT network encrypted."""
    cal = train.images[:CALIBRATION]
    ptq_accuracy, ptq_outside = integer_accuracy(quantize(model, cal, spec), test)
    config = FINETUNE if spec.ranges == "calibrated" else WORST_CASE_FINETUNE
    tuned = finetune(model, train.images, train.labels, spec, config, calibration=cal)
    network = tuned.network
    qat_accuracy, outside = integer_accuracy(network, test)
    row = {
        "dataset": name,
        "width": width,
        "spec": spec.as_dict(),
        "float_accuracy": float_accuracy(model, test.images, test.labels),
        "ptq_accuracy": ptq_accuracy,
        "ptq_test_out_of_range": ptq_outside,
        "integer_accuracy": qat_accuracy,
        "test_out_of_range": outside,
        "finetune": {"epochs": config.epochs, "lr": config.lr},
        **encrypted(network, train, test, images),
    }
    run = row["encrypted"]
    print(
        f"{name:13s} 784→{width:<3d}→10 W{spec.weight_bits} A{spec.activation_bits} "
        f"I{spec.input_bits} L{spec.lookup_bits} {spec.ranges:10s} "
        f"float {row['float_accuracy']:.2%} "
        f"PTQ {ptq_accuracy:.2%} QAT {qat_accuracy:.2%} (out of range {outside}) "
        f"PBS {row['statistics']['programmable_bootstraps']:4d} "
        f"keygen {run['keygen_s']:.1f}s first run {run['first_run_s']:.2f}s "
        f"run {run['run_s']:.2f}s/img "
        f"identical {run['agreement']:.0%} ({len(run['out_of_range'])} out of range)",
        flush=True,
    )
    return row, network


def trade_off(
    args: argparse.Namespace, train: Split, test: Split, models: dict[tuple[str, int], Any]
) -> list[dict[str, Any]]:
    rows = []
    for width in args.widths:
        if ("mnist", width) not in models:
            models["mnist", width] = train_mlp(train, "mnist", width, epochs=args.epochs)
        model = models["mnist", width]
        for text in args.specs:
            spec = parse_spec(text)
            row, _ = setting(model, "mnist", train, test, width, spec, args.trade_off_images)
            rows.append(row)
    return rows


def chosen(args: argparse.Namespace, entry: str, models: dict[tuple[str, int], Any]) -> Any:
    """Table 3.1's rows for one chosen ``DATASET:WIDTH:SPEC``, and (for the headline entry) the
    same network with worst-case ranges."""
    name, width_text, spec_text = entry.split(":")
    width = int(width_text)
    train = load_split(name, "train", args.data_root)
    test = load_split(name, "test", args.data_root)
    if (name, width) not in models:
        models[name, width] = train_mlp(train, name, width, epochs=args.epochs)
    model = models[name, width]
    spec = parse_spec(spec_text)
    row, network = setting(model, name, train, test, width, spec, args.table_images)
    worst = None
    if entry == args.chosen[0]:
        worst_spec = replace(spec, ranges="worst-case")
        worst, _ = setting(model, name, train, test, width, worst_spec, args.trade_off_images)
    run = row["encrypted"]
    float_acc, integer_acc = row["float_accuracy"], row["integer_accuracy"]
    return {
        "entry": entry,
        "setting": row,
        "worst_case_ranges": worst,
        "meets_targets": {
            "integer_within_1.5_points": integer_acc >= float_acc - TOLERANCE,
            "integer_at_least_97%": integer_acc >= TARGET if name == "mnist" else None,
            "latency_at_most_1s": run["run_s"] <= 1.0,
        },
        "table_3_1": [
            {
                "system": "plain float (PyTorch)",
                "accuracy": float_acc,
                "s_per_image": float_latency(model, test.images[:200]),
            },
            {
                "system": "plain integer (numpy)",
                "accuracy": integer_acc,
                "s_per_image": integer_latency(network, test.images[:200]),
            },
            {
                "system": "encrypted (TFHE, concrete-python)",
                "accuracy": run["accuracy"],
                "images": run["images"],
                "s_per_image": run["run_s"],
                "client_s_per_image": run["encrypt_s"] + run["decrypt_s"],
                "keygen_s": run["keygen_s"],
                "first_run_s": run["first_run_s"],
                "evaluation_key_bytes": run["evaluation_key_bytes"],
                "bit_identical": run["agreement"],
                "out_of_range": len(run["out_of_range"]),
            },
        ],
        "thesis": {"plain_s_per_image": 1e-4, "encrypted_s_per_image": 300.0},
    }


def rounding_comparison(
    args: argparse.Namespace, entry: str, models: dict[tuple[str, int], Any]
) -> dict[str, Any]:
    """One QAT network compiled with exact and with approximate rounding, run side by side;
    the approximate circuit's accuracy on the whole test set comes from concrete's simulation
    of its rounding errors (the plain network cannot reproduce them)."""
    name, width_text, spec_text = entry.split(":")
    width, spec = int(width_text), parse_spec(spec_text)
    train = load_split(name, "train", args.data_root)
    test = load_split(name, "test", args.data_root)
    if (name, width) not in models:
        models[name, width] = train_mlp(train, name, width, epochs=args.epochs)
    cal = train.images[:CALIBRATION]
    model = models[name, width]
    tuned = finetune(model, train.images, train.labels, spec, FINETUNE, calibration=cal)
    network = tuned.network
    integer, outside = integer_accuracy(network, test)
    rows = {r: encrypted(network, train, test, args.rounding_images, r) for r in ROUNDINGS}
    exact, approximate = (rows[r]["encrypted"] for r in ROUNDINGS)
    noisy_config = replace(FINETUNE, rounding_noise=ROUNDING_NOISE)
    noisy = finetune(model, train.images, train.labels, spec, noisy_config, calibration=cal).network
    noisy_row = encrypted(noisy, train, test, args.rounding_images, "approximate")
    result = {
        "entry": entry,
        "float_accuracy": float_accuracy(model, test.images, test.labels),
        "integer_accuracy": integer,
        "test_out_of_range": outside,
        "exact": rows["exact"],
        "approximate": rows["approximate"],
        "approximate_simulated": approximate_accuracy(network, train, test),
        "speed_up": exact["run_s"] / approximate["run_s"],
        "noise_qat": {
            "rounding_noise": ROUNDING_NOISE,
            "integer_accuracy": integer_accuracy(noisy, test)[0],
            "approximate": noisy_row,
            "approximate_simulated": approximate_accuracy(noisy, train, test),
        },
    }
    simulated = result["approximate_simulated"]
    noise_simulated = result["noise_qat"]["approximate_simulated"]
    print(
        f"{entry}: exact {rows['exact']['statistics']['programmable_bootstraps']} PBS "
        f"{exact['run_s']:.2f}s/img (identical {exact['agreement']:.0%}); approximate "
        f"{rows['approximate']['statistics']['programmable_bootstraps']} PBS "
        f"{approximate['run_s']:.2f}s/img (identical {approximate['agreement']:.0%}, same class "
        f"{approximate['argmax_agreement']:.0%}) = {result['speed_up']:.2f}x; float "
        f"{result['float_accuracy']:.2%}, integer "
        f"{integer:.2%}, approximate simulated {simulated['accuracy']:.2%} (same class "
        f"{simulated['same_class']:.2%}, identical {simulated['identical']:.2%}); noise QAT: "
        f"integer {result['noise_qat']['integer_accuracy']:.2%}, approximate simulated "
        f"{noise_simulated['accuracy']:.2%}, encrypted {noisy_row['encrypted']['run_s']:.2f}s/img",
        flush=True,
    )
    return result


def approximate_accuracy(network: IntegerNetwork, train: Split, test: Split) -> dict[str, Any]:
    """The approximately rounded circuit on the whole test set, by concrete's simulation."""
    traced = network.quantize_inputs(train.images[:INPUTSET])
    return simulated_accuracy(network, traced, test.images, test.labels)


def robustness(args: argparse.Namespace) -> dict[str, Any]:
    """A PGD-trained MLP; its integer networks judged on PGD images made on the float model."""
    train = load_split("mnist", "train", args.data_root)
    test = load_split("mnist", "test", args.data_root)
    _, width, spec_text = args.chosen[0].split(":")
    training_attack = PGD(eps=ADVERSARIAL_EPS, steps=args.adversarial_steps)
    model = train_mlp(train, "mnist", int(width), epochs=args.epochs, adversarial=training_attack)
    spec = parse_spec(spec_text)
    cal = train.images[:CALIBRATION]
    networks = {
        "ptq": quantize(model, cal, spec),
        "qat": finetune(model, train.images, train.labels, spec, FINETUNE, calibration=cal).network,
        "ptq_worst_case": quantize(model, cal, replace(spec, ranges="worst-case")),
    }
    count = args.robust_images
    attack = PGD(eps=ADVERSARIAL_EPS, steps=50)
    results = {}
    for label, network in networks.items():
        result = integer_robustness(
            model, network, test.images[:count], test.labels[:count], attack
        )
        results[label] = result.as_dict()
        print(f"robustness {label}: {result.as_dict()}", flush=True)
    return {
        "width": int(width),
        "spec": spec.as_dict(),
        "eps": ADVERSARIAL_EPS,
        "training_steps": args.adversarial_steps,
        "evaluation": "PGD eps=0.1, 50 steps, on the float model; integer networks classify",
        "integer_networks": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS)
    parser.add_argument("--specs", nargs="+", default=SPECS, help="W,A,I,L bits per setting")
    parser.add_argument("--chosen", nargs="+", default=CHOSEN, help="DATASET:WIDTH:W,A,I,L")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="float training epochs")
    parser.add_argument("--trade-off-images", type=int, default=TRADE_OFF_IMAGES)
    parser.add_argument("--table-images", type=int, default=TABLE_IMAGES)
    parser.add_argument("--robust-images", type=int, default=ROBUST_IMAGES)
    parser.add_argument("--adversarial-steps", type=int, default=ADVERSARIAL_STEPS)
    parser.add_argument("--rounding-entries", nargs="+", default=ROUNDING_ENTRIES)
    parser.add_argument("--rounding-images", type=int, default=ROUNDING_IMAGES)
    parser.add_argument("--skip-table", action="store_true", help="skip the chosen settings")
    parser.add_argument("--skip-rounding", action="store_true")
    parser.add_argument("--skip-trade-off", action="store_true")
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: one width, few images")
    parser.add_argument("--note", default="", help="saved with the results (e.g. 'busy machine')")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fhe.json"))
    args = parser.parse_args()
    if args.quick:
        args.widths, args.specs, args.epochs = [16], SPECS[:1], 2
        args.chosen = ["mnist:16:3,3,1,5", "fashion-mnist:16:3,3,1,5"]
        args.table_images, args.trade_off_images, args.robust_images = 2, 1, 100
        args.rounding_entries, args.rounding_images = args.chosen[:1], 2
    started = time.perf_counter()
    models: dict[tuple[str, int], Any] = {}
    result: dict[str, Any] = {}
    if not args.skip_table:
        result["chosen"] = [chosen(args, entry, models) for entry in args.chosen]
    if not args.skip_rounding:
        result["rounding"] = [rounding_comparison(args, e, models) for e in args.rounding_entries]
    if not args.skip_trade_off:
        mnist = (
            load_split("mnist", "train", args.data_root),
            load_split("mnist", "test", args.data_root),
        )
        result["trade_off"] = trade_off(args, *mnist, models)
    if not args.skip_robustness:
        result["robustness"] = robustness(args)
    result["seconds"] = time.perf_counter() - started
    result["note"] = args.note
    result["command"] = " ".join(["python", "benchmarks/fhe.py", *sys.argv[1:]])
    result["provenance"] = provenance()
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()

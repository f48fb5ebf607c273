"""Encrypted inference measured: Table 3.1 re-measured and the accuracy/latency trade-off.

Run: ``python benchmarks/fhe.py`` (needs the fhe extra and MNIST/Fashion-MNIST under the data
root). For every dataset and hidden width it trains a 784→width→10 MLP, quantises it at each
bit-width setting (post-training, then with quantisation-aware fine-tuning), compiles it with
concrete-python and records: float and integer test accuracy, table lookups, bootstraps,
concrete's cost estimate, key sizes, keygen time and per-image encrypted latency (one image at
a time) with bit-identity against the plain integer network. It then writes Table 3.1's rows
(plain float, plain integer, encrypted) for the fastest setting at ≥ 97% MNIST accuracy, and
the integer network's robust accuracy for a PGD-trained model attacked through its float
surrogate. Results: ``benchmarks/results/fhe.json``. Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustlab.attacks import PGD
from robustlab.crypto import IntegerNetwork, QuantSpec, quantize
from robustlab.crypto.artifact import compile_artifact
from robustlab.crypto.measure import encrypted_run, float_accuracy, float_latency, integer_latency
from robustlab.crypto.qat import FinetuneConfig, finetune
from robustlab.crypto.robustness import integer_robustness
from robustlab.data import Split, dataset_info, load_split
from robustlab.io import atomic_write_json
from robustlab.models import build_model
from robustlab.provenance import provenance

# -- hyper-parameters ---------------------------------------------------------------------------
EPOCHS = 30  # float training of each MLP (Adam, one-cycle, batch 128): ~12 s per width here
BATCH = 128
MAX_LR = 3e-3
CALIBRATION = 5000  # training images for post-training calibration
INPUTSET = 100  # training images concrete traces the circuit on
TARGET = 0.97  # the MNIST accuracy target for the headline row
# weight, activation, input, lookup bits
SPECS = ["3,3,1,6", "4,3,1,6", "4,4,2,7", "4,4,1,8"]
WIDTHS = [16, 24, 32, 48]
ADVERSARIAL_EPS = 0.1  # PGD budget (pixels) for the adversarially trained model


def train_mlp(train: Split, name: str, width: int, *, adversarial: PGD | None = None) -> Any:
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
    steps = EPOCHS * ((len(train) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=steps)
    for _ in range(EPOCHS):
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


def measure_setting(
    model: Any, network: IntegerNetwork, train: Split, test: Split, encrypted: int
) -> dict[str, Any]:
    """Compile, then time ``encrypted`` test images through the real protocol."""
    with tempfile.TemporaryDirectory() as directory:
        started = time.perf_counter()
        manifest = compile_artifact(
            directory, network, network.quantize_inputs(train.images[:INPUTSET])
        )
        compile_s = time.perf_counter() - started
        run = encrypted_run(directory, test.images[:encrypted], test.labels[:encrypted])
    return {
        "summary": manifest["summary"],
        "statistics": manifest["statistics"],
        "compile_s": compile_s,
        "encrypted": run.as_dict(),
    }


def sweep(args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    train = load_split(name, "train", args.data_root)
    test = load_split(name, "test", args.data_root)
    rows = []
    for width in args.widths:
        model = train_mlp(train, name, width)
        float_acc = float_accuracy(model, test.images, test.labels)
        for text in args.specs:
            spec = QuantSpec(*(int(v) for v in text.split(",")))
            cal = train.images[:CALIBRATION]
            ptq = quantize(model, cal, spec)
            tuned = model
            if args.finetune_epochs:
                config = FinetuneConfig(epochs=args.finetune_epochs)
                tuned = finetune(model, train.images, train.labels, spec, config)
            network = quantize(tuned, cal, spec)
            row = {
                "dataset": name,
                "width": width,
                "spec": spec.as_dict(),
                "float_accuracy": float_acc,
                "ptq_accuracy": float((ptq.predict(test.images) == test.labels.numpy()).mean()),
                "integer_accuracy": float(
                    (network.predict(test.images) == test.labels.numpy()).mean()
                ),
                "finetune_epochs": args.finetune_epochs,
                "float_s_per_image": float_latency(model, test.images[:200]),
                "integer_s_per_image": integer_latency(network, test.images[:200]),
                **measure_setting(tuned, network, train, test, args.encrypted_images),
            }
            rows.append(row)
            run = row["encrypted"]
            print(
                f"{name:13s} 784→{width:<3d}→10 bits {text:8s} float {float_acc:.2%} "
                f"int {row['integer_accuracy']:.2%} (ptq {row['ptq_accuracy']:.2%}) "
                f"PBS {row['statistics']['programmable_bootstraps']:4d} "
                f"keygen {run['keygen_s']:.1f}s run {run['run_s']:.2f}s/img "
                f"identical {run['agreement']:.0%}",
                flush=True,
            )
    return rows


def table_3_1(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The thesis's table for the fastest MNIST setting at ≥ TARGET integer accuracy."""
    good = [r for r in rows if r["dataset"] == "mnist" and r["integer_accuracy"] >= TARGET]
    if not good:
        return None
    best = min(good, key=lambda r: r["encrypted"]["run_s"])
    return {
        "setting": {"width": best["width"], "spec": best["spec"]},
        "rows": [
            {
                "system": "plain float",
                "accuracy": best["float_accuracy"],
                "s_per_image": best["float_s_per_image"],
            },
            {
                "system": "plain integer",
                "accuracy": best["integer_accuracy"],
                "s_per_image": best["integer_s_per_image"],
            },
            {
                "system": "encrypted (TFHE)",
                "accuracy": best["encrypted"]["accuracy"],
                "s_per_image": best["encrypted"]["run_s"],
            },
        ],
        "keygen_s": best["encrypted"]["keygen_s"],
        "evaluation_key_bytes": best["encrypted"]["evaluation_key_bytes"],
        "thesis": {"plain_s_per_image": 1e-4, "encrypted_s_per_image": 300.0},
    }


def robustness(args: argparse.Namespace) -> dict[str, Any]:
    """A PGD-trained MLP; its integer network judged on PGD images made on the float model."""
    train = load_split("mnist", "train", args.data_root)
    test = load_split("mnist", "test", args.data_root)
    attack = PGD(eps=ADVERSARIAL_EPS, steps=args.adversarial_steps)
    model = train_mlp(train, "mnist", args.robust_width, adversarial=attack)
    spec = QuantSpec(*(int(v) for v in args.specs[0].split(",")))
    network = quantize(model, train.images[:CALIBRATION], spec)
    count = args.robust_images
    evaluation = PGD(eps=ADVERSARIAL_EPS, steps=50)
    result = integer_robustness(
        model, network, test.images[:count], test.labels[:count], evaluation
    )
    return {
        "width": args.robust_width,
        "spec": spec.as_dict(),
        "eps": ADVERSARIAL_EPS,
        **result.as_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS)
    parser.add_argument("--specs", nargs="+", default=SPECS, help="W,A,I,L bits per setting")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--encrypted-images", type=int, default=10)
    parser.add_argument("--robust-width", type=int, default=32)
    parser.add_argument("--robust-images", type=int, default=1000)
    parser.add_argument("--adversarial-steps", type=int, default=10)
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fhe.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [row for name in args.datasets for row in sweep(args, name)]
    result: dict[str, Any] = {"settings": rows, "table_3_1": table_3_1(rows)}
    if not args.skip_robustness:
        result["robustness"] = robustness(args)
        print(f"robustness: {result['robustness']}")
    result["seconds"] = time.perf_counter() - started
    result["provenance"] = provenance()
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

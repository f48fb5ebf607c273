"""Approximate rounding across widths and bit widths: which setting is fastest at >= 97%?

Each ``WIDTH:W,A,I,L`` entry trains a 784→width→10 MNIST MLP as ``benchmarks/fhe.py`` does,
fine-tunes it with accumulator noise (``ROUNDING_NOISE``, approximate rounding's error),
measures the approximately rounded circuit's whole-test-set accuracy by concrete's simulation,
and runs a few test images encrypted for its latency. First, how often approximate rounding
is off, by the value of the removed bits (``rounding_errors``). Exact rounding is measured
side by side in ``benchmarks/fhe.py`` (section 3); this sweep looks for a faster approximate
setting.

Run: ``python benchmarks/fhe.py``'s environment, ``python benchmarks/fhe_approximate.py``.
Results: ``benchmarks/results/fhe-approximate.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fhe as bench  # the sibling benchmark: training and measuring helpers

from robustlab.crypto.backend import require_concrete
from robustlab.crypto.qat import finetune
from robustlab.data import load_split
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance

ENTRIES = ["48:4,4,2,5", "48:4,4,1,5", "48:3,4,2,5", "40:4,4,2,5", "40:4,4,2,6", "32:4,4,2,6"]
IMAGES = 3


def measure(entry: str, train: Any, test: Any, models: dict[int, Any], images: int) -> Any:
    width_text, spec_text = entry.split(":")
    width, spec = int(width_text), bench.parse_spec(spec_text)
    if width not in models:
        models[width] = bench.train_mlp(train, "mnist", width)
    model = models[width]
    config = replace(bench.FINETUNE, rounding_noise=bench.ROUNDING_NOISE)
    cal = train.images[: bench.CALIBRATION]
    network = finetune(model, train.images, train.labels, spec, config, calibration=cal).network
    row = {
        "entry": entry,
        "float_accuracy": bench.float_accuracy(model, test.images, test.labels),
        "integer_accuracy": bench.integer_accuracy(network, test)[0],
        "approximate_simulated": bench.approximate_accuracy(network, train, test),
        **bench.encrypted(network, train, test, images, "approximate"),
    }
    run, simulated = row["encrypted"], row["approximate_simulated"]
    print(
        f"{entry}: float {row['float_accuracy']:.2%} integer {row['integer_accuracy']:.2%} "
        f"approximate simulated {simulated['accuracy']:.2%} "
        f"PBS {row['statistics']['programmable_bootstraps']} "
        f"cost {row['statistics']['complexity']:.2e} run {run['run_s']:.2f}s/img "
        f"(same class {run['argmax_agreement']:.0%})",
        flush=True,
    )
    return row


def rounding_errors(bits: int = 10, lsbs: int = 5, draws: int = 10) -> dict[str, Any]:
    """How often concrete's approximate rounding lands on the neighbouring value, by the value
    of the removed bits (simulated, every ``bits``-bit input, ``draws`` draws each)."""
    fhe = require_concrete()

    def rounded(x: Any) -> Any:
        kept = fhe.round_bit_pattern(x, lsbs_to_remove=lsbs)
        return fhe.univariate(lambda v: v // 2**lsbs)(kept)

    values = np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1) - 2**lsbs)
    configuration = fhe.Configuration(
        fhe_simulation=True, fhe_execution=False, rounding_exactness=fhe.Exactness.APPROXIMATE
    )
    circuit = fhe.Compiler(rounded, {"x": "encrypted"}).compile(
        [int(v) for v in values], configuration
    )
    exact = np.floor(values / 2**lsbs + 0.5).astype(np.int64)
    wrong = np.zeros(len(values))
    for _ in range(draws):
        wrong += np.array([circuit.simulate(int(v)) for v in values]) != exact
    removed = values % 2**lsbs
    rates = [float(wrong[removed == r].mean() / draws) for r in range(2**lsbs)]
    print("off-by-one rate by removed bits:", " ".join(f"{r}:{v:.2f}" for r, v in enumerate(rates)))
    return {"bits": bits, "lsbs": lsbs, "draws": draws, "off_by_one_by_removed_bits": rates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", nargs="+", default=ENTRIES, help="WIDTH:W,A,I,L")
    parser.add_argument("--images", type=int, default=IMAGES, help="encrypted images each")
    parser.add_argument("--skip-sweep", action="store_true", help="only the error rates")
    parser.add_argument("--note", default="", help="saved with the results")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fhe-approximate.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    train = load_split("mnist", "train", args.data_root)
    test = load_split("mnist", "test", args.data_root)
    models: dict[int, Any] = {}
    errors = rounding_errors()
    rows = (
        []
        if args.skip_sweep
        else [measure(e, train, test, models, args.images) for e in args.entries]
    )
    result = {
        "rounding_errors": errors,
        "rows": rows,
        "rounding_noise": bench.ROUNDING_NOISE,
        "seconds": time.perf_counter() - started,
        "note": args.note,
        "command": " ".join(["python", "benchmarks/fhe_approximate.py", *sys.argv[1:]]),
        "provenance": provenance(),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} in {result['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()

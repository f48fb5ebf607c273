"""The faithful Table 5.1 protocol (configs/thesis-table-5-1.yaml) cut down to fit a few
minutes of one GPU, for benchmarks/gpu.sh: one seed, ε = 0.3 only (the MNIST budget; no
calibration), the first 12 800 training images, 2 + 2 epochs, 500 attacked test images. The
PGD-200 training attack and the phase-end attacks are unchanged, so the cost per image and
epoch is the faithful protocol's.

Run: ``python benchmarks/gpu_reduced_config.py OUT.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def reduced_table_config() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "thesis-table-5-1.yaml").read_text())
    raw["name"] = "thesis-table-5-1-reduced"
    raw["seeds"] = [0]
    raw["data"]["train_images"] = 12_800
    raw["evaluation"]["attack_images"] = 500
    for phase in raw["phases"]:
        phase["epochs"] = 2
    raw["sweep"] = {"grid": {"threat.eps": [0.3]}}
    raw.pop("calibration", None)
    return raw


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(yaml.safe_dump(reduced_table_config(), sort_keys=False))

"""The compression probe's part of the report: robust accuracy lost to pruning and to k-bit
weights per grid point, and whether deeper networks lose more at equal parameter count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustlab.experiments.document import Callout, Section
from robustlab.experiments.kinds.plasticity.cells import Cell, GridPoint, grid_points
from robustlab.experiments.kinds.plasticity.fit import depth_verdict, fit_rows
from robustlab.experiments.tables import Spread, Table, spread


def _probe(cell: Cell) -> dict[str, Any]:
    assert cell.probe is not None
    found: dict[str, Any] = cell.probe["compression"]
    return found


def _lost(cell: Cell, part: str, position: int) -> float:
    """Points of robust accuracy lost by the ``position``-th copy of ``part``."""
    probe = _probe(cell)
    lost = probe["original"]["robust_accuracy"] - probe[part][position]["robust_accuracy"]
    return 100 * float(lost)


def attack_label(described: dict[str, Any]) -> str:
    """``autoattack (fast)``, ``pgd (40 steps)``: an attack's ``describe()`` in a few words."""
    name = str(described.get("attack", "the attack"))
    detail = described.get("version") or (
        f"{described['steps']} steps" if described.get("steps") else None
    )
    budget = f", ε = {described['eps']:g}" if isinstance(described.get("eps"), float) else ""
    return f"{name} ({detail}{budget})" if detail else f"{name}{budget}"


def _lost_text(point: GridPoint, part: str, position: int) -> str:
    return Spread([_lost(cell, part, position) for cell in point.cells]).text(signed=True)


def _row(point: GridPoint, sparsities: int, bits: int) -> list[str]:
    original = [_probe(cell)["original"]["robust_accuracy"] for cell in point.cells]
    return [
        f"{point.depth:g}",
        f"{point.width:g}",
        f"{point.parameters:,}",
        spread(original).text(),
        *(_lost_text(point, "pruned", i) for i in range(sparsities)),
        *(_lost_text(point, "quantised", i) for i in range(bits)),
    ]


def compression_section(cells: Sequence[Cell]) -> Section | None:
    probed = [cell for cell in cells if cell.probe is not None and "compression" in cell.probe]
    if not probed:
        return None
    first = _probe(probed[0])
    sparsities = [entry["sparsity"] for entry in first["pruned"]]
    bits = [entry["bits"] for entry in first["quantised"]]
    table = Table(
        title="Compression: robust accuracy lost (points) by pruning then fine-tuning, and by "
        "k-bit weights",
        columns=[
            "depth",
            "width",
            "parameters",
            "robust accuracy as trained (%)",
            *(f"pruned {s:g}" for s in sparsities),
            *(f"{b}-bit" for b in bits),
        ],
        rows=[_row(point, len(sparsities), len(bits)) for point in grid_points(probed)],
        label_columns=2,
        note=f"Robust accuracy under {attack_label(first['attack'])} on the first "
        f"{first['images']} test images, the same for the model as trained and for every "
        "compressed copy; mean ± std over seeds. Pruning: global magnitude over conv and linear "
        "weights, then fine-tuning with the trial's own adversarial objective, masks kept. "
        "Quantisation: symmetric, one scale per output channel, no fine-tuning.",
    )
    callouts = []
    if sparsities:
        rows = [(cell, _lost(cell, "pruned", len(sparsities) - 1)) for cell in probed]
        verdict = depth_verdict(fit_rows("pruning loss", rows), lower_is_better=True)
        answer = {
            "yes": "No: deeper networks lose less",
            "no": "Yes: deeper networks lose more",
            "undecided": "Undecided",
        }[verdict.answer]
        callouts.append(
            Callout(
                f"Do deeper networks suffer more under pruning to sparsity {sparsities[-1]:g}?",
                f"{answer}; {verdict.text} (points of robust accuracy lost, fit "
                "a + b·depth + c·log2(parameters)).",
            )
        )
    return Section("Compression as a capacity probe", [table], callouts=callouts)

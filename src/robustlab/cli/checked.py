"""Printing a checked evaluation: robust accuracy per attack, then every sanity check."""

from __future__ import annotations

from pathlib import Path

from robustlab.cli.console import console, print_table
from robustlab.evaluate.checked import CheckedEvaluation


def print_checked(run_dir: Path, evaluation: CheckedEvaluation) -> None:
    defended = " → ".join(evaluation.defenses) or "no defenses"
    rejected = (
        ""
        if evaluation.false_positive_rate is None
        else f", clean rejected {evaluation.false_positive_rate:.2%}"
    )
    rows = [
        [
            item.name,
            str(item.plan["gradients"]),
            f"{item.summary['robust_acc']:.2%}",
            f"{item.summary['success_rate']:.2%}",
            f"{item.summary['rejected_share']:.2%}",
            f"{item.summary['seconds']:.1f}s",
            ", ".join(item.flagged) or ("none" if item.checks else "not run"),
        ]
        for item in evaluation.attacks
    ]
    if evaluation.worst_case_accuracy is not None:
        rows.append(["worst case", "", f"{evaluation.worst_case_accuracy:.2%}", "", "", "", ""])
    print_table(
        f"{run_dir} ({defended}): first {evaluation.images} test images, clean accuracy "
        f"{evaluation.clean_accuracy:.2%}{rejected}",
        ["attack", "gradients", "robust acc", "success", "rejected", "time", "failed checks"],
        rows,
    )
    rows = [
        [item.name, check.name, "pass" if check.passed else "FAIL", check.measured, check.advice]
        for item in evaluation.attacks
        for check in item.checks
    ]
    if rows:
        print_table(
            "sanity checks (Carlini et al. 2019)",
            ["attack", "check", "result", "measured", "what to try"],
            rows,
        )
    console.print(f"results: {evaluation.results_file}")

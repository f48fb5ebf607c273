"""Terminal output for the CLI: progress bars, per-epoch lines and result tables.

Kept apart from the library, which never prints: the trainer emits events and this module
draws them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from robustlab.config import PhaseConfig, TrialConfig
from robustlab.train.inputs import TrialData
from robustlab.train.trainer import TrainingReporter

# A log file is not a terminal and would be folded at 80 columns; tables need more room.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False)


class ConsoleReporter(TrainingReporter):
    """A transient progress bar per epoch and one permanent line when it ends.

    With a ``label`` (a worker process beside others) there are no bars, which would
    overwrite each other, and every line starts with the label.
    """

    def __init__(self, label: str | None = None) -> None:
        self._label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._phase_epochs = 0

    def in_worker(self, label: str) -> TrainingReporter:
        return ConsoleReporter(label)

    def _print(self, line: str, *, labelled: bool = True) -> None:
        prefix = f"[dim]{escape(self._label)}:[/] " if self._label and labelled else ""
        console.print(prefix + line)
        console.file.flush()  # one line per epoch, promptly, also when piped to a log file

    def run_started(self, config: TrialConfig, data: TrialData, resumed_at: int) -> None:
        where = f", resuming after epoch {resumed_at}" if resumed_at else ""
        self._print(
            f"[bold]{config.experiment}/{config.trial}[/]: {config.model.name} on "
            f"{data.info.name} ({len(data.train.labels)} train / {len(data.test.labels)} test), "
            f"{config.total_epochs} epochs in {len(config.phases)} phase(s), "
            f"seed {config.seed}{where}",
            labelled=False,  # it names the trial already
        )

    def epoch_started(self, phase: PhaseConfig, epoch: int, batches: int) -> None:
        self._phase_epochs = phase.epochs
        if self._label or not console.is_terminal:  # a log file gets the per-epoch lines
            return
        self._progress = Progress(
            TextColumn(f"{phase.name} {epoch}/{phase.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=batches, loss=float("nan"))

    def batch_done(self, loss: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, loss=loss)

    def epoch_done(self, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        train_eval = record.get("train_eval_acc")
        train_eval_text = f" (eval {train_eval:.2%})" if train_eval is not None else ""
        seconds = record["train_seconds"] + record["eval_seconds"]
        attacked = "".join(
            f"  {name} {result['robust_acc']:.2%}"
            for name, result in record.get("attacks", {}).items()
        )
        check = record.get("overfitting")
        checked = (
            f"  overfitting check: PGD {check['pgd_acc']:.1%} vs training attack "
            f"{check['train_attack_acc']:.1%}{' FLAGGED' if check['flagged'] else ''}"
            if check
            else ""
        )
        self._print(
            f"{record['phase']} {record['epoch']:>2}/{self._phase_epochs}  "
            f"loss {record['train_loss']:.4f}  train {record['train_acc']:.2%}{train_eval_text}  "
            f"test {record['test_acc']:.2%}{attacked}{checked}  {seconds:.0f}s"
        )

    def status(self, message: str) -> None:
        self._print(message)


NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?[%sx]?$")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table whose numeric columns are right-aligned and the rest left-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        numeric = bool(cells) and all(NUMBER.match(row[index]) for row in cells)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)

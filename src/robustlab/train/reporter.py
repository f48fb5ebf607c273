"""The progress events a training run emits, and a reporter that ignores them all."""

from __future__ import annotations

from typing import Any

from robustlab.config import PhaseConfig, TrialConfig
from robustlab.train.inputs import TrialData


class TrainingReporter:
    """Receives progress events; the CLI draws them, library code stays silent."""

    def run_started(self, config: TrialConfig, data: TrialData, resumed_at: int) -> None: ...

    def epoch_started(self, phase: PhaseConfig, epoch: int, batches: int) -> None: ...

    def batch_done(self, loss: float) -> None: ...

    def epoch_done(self, record: dict[str, Any]) -> None: ...

    def status(self, message: str) -> None:
        """A step without epochs (an evaluation, a calibration) started or ended."""

    def in_worker(self, label: str) -> TrainingReporter:
        """The reporter a worker process running the job ``label`` uses; it must pickle."""
        return TrainingReporter()

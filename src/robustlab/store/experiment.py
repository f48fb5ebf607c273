"""The layout of an experiment folder, in one place.

``<out>/<experiment>/experiment.yaml``   the config as written (inheriting fields stay unset)
``<out>/<experiment>/index.sqlite``      the trial index (``robustlab.store.index``)
``<out>/<experiment>/calibration.json``  the calibrated ε and what it was computed from
``<out>/<experiment>/summary.json``      every finished trial's results, when all finished
``<out>/<experiment>/<trial>/``          one run directory per trial (``robustlab.store.runs``)
``<out>/<experiment>/report/``           the report
``<out>/shared/<prefix>/``               shared phases, trained once for every experiment in
                                         ``<out>`` that has them
``<out>/<experiment>/.lock``             held while ``robustlab run`` writes the experiment
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import ExperimentConfig, load_experiment, to_yaml
from robustlab.errors import ConfigError
from robustlab.io import atomic_write_json, atomic_write_text, remove_leftover_temporaries
from robustlab.store.lock import folder_lock
from robustlab.store.runs import RunDirectory

SHARED_FOLDER = "shared"


@dataclass(frozen=True)
class ExperimentDirectory:
    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "experiment.yaml"

    @property
    def index_file(self) -> Path:
        return self.path / "index.sqlite"

    @property
    def calibration_file(self) -> Path:
        return self.path / "calibration.json"

    @property
    def summary_file(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_folder(self) -> Path:
        return self.path / "report"

    def lock(self) -> AbstractContextManager[None]:
        """Held by the process driving the experiment; its workers lock each trial's folder."""
        return folder_lock(self.path, "experiment folder")

    def remove_leftovers(self) -> None:
        """Temporary files of this folder's own writes killed half way (call with the lock
        held). Not ``report/``, which ``robustlab report`` may write at any time."""
        remove_leftover_temporaries(self.path)

    def trial(self, name: str) -> RunDirectory:
        return RunDirectory(self.path / name)

    def write_config(self, config: ExperimentConfig) -> None:
        atomic_write_text(self.config_file, to_yaml(config, only_written=True))

    def read_config(self) -> ExperimentConfig:
        if not self.config_file.exists():
            raise ConfigError(
                f"{self.path} is not an experiment folder: {self.config_file.name} is missing "
                "(run `robustlab run CONFIG` first)"
            )
        return load_experiment(self.config_file)

    def read_calibration(self) -> dict[str, Any] | None:
        if not self.calibration_file.exists():
            return None
        data: dict[str, Any] = json.loads(self.calibration_file.read_text(encoding="utf-8"))
        return data

    def write_calibration(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.calibration_file, record)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_file, summary)

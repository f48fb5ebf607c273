"""``capacity.json`` (or ``capacity-robust.json``): the settings, every attempt as it finishes,
and each architecture's result. Rewritten atomically after every attempt, so a killed search
loses at most the attempt it was in; a search with other settings is refused rather than
mixed into the same file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustlab.errors import ConfigError
from robustlab.experiments.capacity.fitting import Attempt
from robustlab.experiments.capacity.settings import CapacitySettings
from robustlab.io import atomic_write_json
from robustlab.provenance import provenance
from robustlab.store.index import differing_fields

if TYPE_CHECKING:
    from robustlab.experiments.capacity.targets import Target


def capacity_file(folder: Path, settings: CapacitySettings) -> Path:
    name = "capacity.json" if settings.measure == "memorisation" else "capacity-robust.json"
    return folder / name


class CapacityStore:
    def __init__(self, path: Path, settings: CapacitySettings) -> None:
        self.path = path
        self.settings = settings.model_dump(mode="json")
        self.data: dict[str, Any] = {"settings": self.settings, "targets": {}}
        if path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            differences = differing_fields(stored.get("settings"), self.settings)
            if differences:
                raise ConfigError(
                    f"{path} holds a search with other settings; they differ in "
                    + ", ".join(differences)
                    + ". Use the same settings to resume it, or --out another file"
                )
            self.data = stored

    def _entry(self, target: Target) -> dict[str, Any]:
        entry: dict[str, Any] = self.data["targets"].setdefault(
            target.key(), {"label": target.label, "attempts": {}, "result": None}
        )
        return entry

    def attempt(self, target: Target, repeat: int, count: int) -> Attempt | None:
        found = self._entry(target)["attempts"].get(str(repeat), {}).get(str(count))
        return None if found is None else Attempt(**found)

    def save_attempt(self, target: Target, repeat: int, found: Attempt) -> None:
        attempts = self._entry(target)["attempts"].setdefault(str(repeat), {})
        attempts[str(found.images)] = found.to_dict()
        self._write()

    def save_result(self, target: Target, result: dict[str, Any]) -> None:
        self._entry(target)["result"] = result
        self._write()

    def results(self) -> list[dict[str, Any]]:
        return [entry["result"] for entry in self.data["targets"].values() if entry["result"]]

    def _write(self) -> None:
        self.data["provenance"] = provenance()
        atomic_write_json(self.path, self.data)

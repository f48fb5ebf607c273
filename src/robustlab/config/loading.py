"""YAML in, typed configs out: every validation error becomes one ConfigError naming fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from robustlab.errors import ConfigError

Schema = TypeVar("Schema", bound=BaseModel)


def parse_config(schema: type[Schema], data: Any, *, source: str) -> Schema:
    """Validate ``data`` against ``schema``; turn pydantic's report into one ConfigError."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for issue in error.errors():
        field = ".".join(str(part) for part in issue["loc"]) or "(top level)"
        if issue["type"] == "union_tag_invalid":  # name the tag field itself, e.g. .type
            field += "." + str(issue.get("ctx", {}).get("discriminator", "type")).strip("'")
        if issue["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/ for examples)"
        else:
            message = issue["msg"]
        given = issue.get("input")
        shown = "" if issue["type"] == "missing" or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {field}: {message}{shown}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> Any:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except OSError as error:
        raise ConfigError(f"config file {file} cannot be read: {error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file} is not valid YAML: {error}") from None


def load_mapping(path: str | Path) -> dict[str, Any]:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def to_yaml(config: BaseModel, *, only_written: bool = False) -> str:
    """The config as YAML; ``only_written`` leaves out every value not set explicitly, so
    fields that inherit (an attack's ε from the threat) still inherit when read back."""
    dumped = config.model_dump(mode="json", exclude_unset=only_written)
    return yaml.safe_dump(dumped, sort_keys=False)

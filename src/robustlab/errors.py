"""Exceptions that carry a message meant for the person running robustlab.

The CLI prints these without a traceback, so every message must name the field or file at
fault and say what was expected or how to fix it.
"""

from __future__ import annotations


class RobustlabError(Exception):
    """Base class for errors whose message is complete advice to the user."""


class ConfigError(RobustlabError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class DatasetError(RobustlabError):
    """A dataset file is missing, corrupt or truncated, or a dataset name is unknown."""


class CheckpointError(RobustlabError):
    """A checkpoint or run directory is missing, unreadable or inconsistent."""


class TrainingDivergedError(RobustlabError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""

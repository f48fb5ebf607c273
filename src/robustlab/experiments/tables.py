"""Report tables as plain data, and numbers over seeds as mean ± spread.

Tables are data (``Table``: a title, column names, rows of cells) so the Markdown, CSV and
HTML writers share them and cannot disagree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    label_columns: int = 1
    """Leading columns that name a row (the CSV's row label joins them)."""


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation over seeds, in percent."""

    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else math.nan

    def text(self, digits: int = 2, *, signed: bool = False) -> str:
        """``mean ± std`` (the mean alone for one value); ``signed``: the mean with its sign,
        for differences such as a cost in points."""
        if not self.values:
            return "–"
        sign = "+" if signed else ""
        if len(self.values) == 1:
            return f"{self.mean:{sign}.{digits}f}"
        return f"{self.mean:{sign}.{digits}f} ± {self.std:.{digits}f}"


def spread(values: Sequence[float | None]) -> Spread:
    """Shares in [0, 1] as percent over seeds; missing values are left out."""
    return Spread([100 * value for value in values if value is not None])


def suffix(setting: str | None) -> str:
    return "" if setting is None else f" [{setting}]"

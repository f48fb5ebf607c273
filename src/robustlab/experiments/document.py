"""A report as data: sections of tables, callouts (verdicts) and figures. Kinds build it;
``robustlab.experiments.reporting`` writes it; neither needs the other's details."""

from __future__ import annotations

from dataclasses import dataclass, field

from robustlab.experiments.tables import Table


@dataclass(frozen=True)
class Callout:
    """A highlighted sentence, e.g. a verdict: ``**lead** text``."""

    lead: str
    text: str


@dataclass(frozen=True)
class Section:
    heading: str
    tables: list[Table]
    callouts: list[Callout] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)
    """File name → PNG."""


@dataclass(frozen=True)
class Report:
    title: str
    paragraphs: list[str]
    sections: list[Section]
    closing: Section | None
    missing: list[str]

    @property
    def all_sections(self) -> list[Section]:
        return self.sections + ([self.closing] if self.closing is not None else [])

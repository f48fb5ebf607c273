"""The ``report:`` options of the two-phase kind (thesis Table 5.1's protocol)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from robustlab.config import StrictModel


class HypothesisConfig(StrictModel):
    """The thesis's Hypothesis 1: the deeper model keeps more clean accuracy under
    adversarial training. Names are model labels (or names) of the experiment."""

    shallow: str = "thesis-shallow"
    deep: str = "thesis-deep"


class TwoPhaseOptions(StrictModel):
    """Which phases are "before" and "after" (Table 5.1's columns), which attack is the
    adversary, and which published numbers to print beside ours."""

    title: str = ""
    before_phase: str | None = Field(default=None, description="default: the first phase")
    after_phase: str | None = Field(default=None, description="default: the last phase")
    adversary: str | None = Field(
        default=None,
        description="label (or its start) of the phase-end attack whose success rate is "
        "'the adversary's'; default: the first phase-end attack",
    )
    hypothesis: HypothesisConfig | None = None
    reference: Literal["thesis-table-5-1", "none"] = "none"
    notes: str = Field(default="", description="printed under the title, e.g. the protocol")

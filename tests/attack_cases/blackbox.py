"""Cases for the score-based black-box attacks of ``square.py`` and ``onepixel.py``.

One-pixel runs with 16 pixels and binomial crossover here: the property tests demand a > 50%
targeted hit rate on the 8×8 digits in about a second, which 1–3 pixels cannot reach.
"""

FAST_PARAMS = {
    "square": {"eps": 0.2, "queries": 100},
    "one-pixel": {"pixels": 16, "population": 40, "iterations": 10, "crossover": 0.2},
}
L0_BUDGET_FIELD = {"one-pixel": "pixels"}

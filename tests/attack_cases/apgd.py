"""Cases for ``apgd.py`` (APGD, APGD-T) and the ``autoattack.py`` cascade."""

FAST_PARAMS = {
    "apgd": {"eps": 0.2, "steps": 10},
    "apgd-t": {"eps": 0.2, "steps": 10, "target_classes": 3},
    "autoattack": {"eps": 0.2, "version": "fast"},
}

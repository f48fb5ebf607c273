"""Cases for the saliency-map attack (``jsma.py``) and the substitute transfer (``transfer.py``)."""

FAST_PARAMS = {
    "jsma": {"max_pixels": 16},
    "substitute": {"eps": 0.3, "rounds": 2, "epochs": 5, "seed_examples": 48},
}
L0_BUDGET_FIELD = {"jsma": "max_pixels"}

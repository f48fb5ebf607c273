"""Cases for the gradient attacks of ``fgsm.py`` and ``iterative.py``."""

FAST_PARAMS = {
    "fgsm": {"eps": 0.2},
    "bim": {"eps": 0.2, "steps": 5},
    "ilcm": {"eps": 0.3, "steps": 8},
    "pgd": {"eps": 0.2, "steps": 8},
    "pgd-kl": {"eps": 0.2, "alpha": 0.05, "steps": 8},
}

"""Cases for the optimisation-based and minimal-perturbation attacks (cw.py, deepfool.py,
lbfgs.py). The minimal-perturbation ones run without ``eps``: they have no budget to respect.
"""

FAST_PARAMS = {
    "cw-l2": {"steps": 30, "binary_search_steps": 3, "initial_const": 1.0, "lr": 0.5},
    "cw-linf": {"eps": 0.2, "steps": 8},
    "cw-l0": {
        "max_pixels": 32,
        "steps": 30,
        "binary_search_steps": 3,
        "lr": 0.5,
        "fix_fraction": 0.3,
    },
    "deepfool": {"steps": 20},
    "lbfgs": {"steps": 10, "binary_search_steps": 3, "initial_const": 1.0},
}
L0_BUDGET_FIELD = {"cw-l0": "max_pixels"}

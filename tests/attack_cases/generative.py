"""Cases for the generative attacks (``upset.py``). UPSET is targeted only: the property tests
call it with target (y + 1) mod 10 wherever other attacks run untargeted."""

FAST_PARAMS = {
    "upset": {"eps": 0.3, "steps": 20},
}

"""Compression as a capacity probe: magnitude pruning and fake weight quantisation.

Both act on a model's conv and linear weights in place of a copy, so every attack and
evaluator runs on the compressed model unchanged; neither touches the normalisation layer or
biases.
"""

from robustlab.compression.pruning import PruningMasks, check_sparsity, prune_by_magnitude
from robustlab.compression.quantization import check_bits, quantize_weights

__all__ = [
    "PruningMasks",
    "check_bits",
    "check_sparsity",
    "prune_by_magnitude",
    "quantize_weights",
]

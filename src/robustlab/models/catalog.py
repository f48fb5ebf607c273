"""The model registry: every architecture robustlab can build, with a one-line description.

All registrations live here, in one list, so ``robustlab models`` and the docs cannot drift
from what ``build_model`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from robustlab.models.convnet import convnet, thesis_deep, thesis_shallow
from robustlab.models.madry import madry_mnist
from robustlab.models.mlp import mlp
from robustlab.models.preact_resnet import preact_resnet, preact_resnet18
from robustlab.models.wide_resnet import wide_resnet
from robustlab.registry import Registry

ModelBuilder = Callable[..., nn.Module]
"""``builder(input_shape, num_classes, *, **options) -> body``.

The body maps normalised inputs to logits; ``build_model`` adds the normalisation. Options are
keyword-only parameters with defaults (their names and defaults are the model's options), and
the builder checks their types and ranges, raising ``ConfigError`` naming the option.
"""

MODELS: Registry[ModelBuilder] = Registry("model")

MODELS.add(
    "thesis-shallow",
    thesis_shallow,
    description="thesis Ch. 5 shallow CNN (Keras MNIST CNN): 2 conv, max-pool, FC 128",
)
MODELS.add(
    "thesis-deep",
    thesis_deep,
    description="thesis Ch. 5 deep CNN: thesis-shallow with a third 3×3 conv",
)
MODELS.add(
    "convnet",
    convnet,
    description="thesis CNN family: depth valid 3×3 convs; width scales channels and FC",
)
MODELS.add(
    "madry-mnist",
    madry_mnist,
    description="MNIST-challenge CNN (Madry et al. 2018): 2 conv 5×5, 2 pools, FC 1024",
)
MODELS.add(
    "mlp",
    mlp,
    description="multilayer perceptron: depth hidden ReLU layers of width units",
)
MODELS.add(
    "preact-resnet18",
    preact_resnet18,
    description="pre-activation ResNet-18 (He et al. 2016), CIFAR variant",
)
MODELS.add(
    "preact-resnet",
    preact_resnet,
    description="pre-activation ResNet family, depth 10/18/26/34, width scales every stage",
)
MODELS.add(
    "wide-resnet",
    wide_resnet,
    description="WideResNet-depth-widen (Zagoruyko & Komodakis 2016), CIFAR variant",
)

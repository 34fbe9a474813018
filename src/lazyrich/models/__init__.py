"""lazyrich.models: the model zoo (plain ``torch.nn`` modules and seeded factories).

Axes: images ``(n, C, H, W)``, vectors ``(n, d)``, tokens ``(n, L)`` (long);
outputs ``(n, c)``.  See :mod:`lazyrich.models.zoo`.
"""

from lazyrich.models.zoo import (
    ACTIVATIONS,
    VGG,
    VGG16_CFG,
    BasicBlock,
    CifarResNet,
    LeNet5,
    SharedLayerNet,
    TinyTransformer,
    TwoLayerNet,
    frozen_mlp,
    lenet5,
    make_activation,
    mlp,
    resnet20,
    shared_layer_net,
    tiny_transformer,
    two_layer,
    vgg16,
    vgg_small,
    with_frozen,
)

__all__ = [
    "ACTIVATIONS",
    "make_activation",
    "mlp",
    "frozen_mlp",
    "with_frozen",
    "LeNet5",
    "lenet5",
    "BasicBlock",
    "CifarResNet",
    "resnet20",
    "VGG",
    "VGG16_CFG",
    "vgg_small",
    "vgg16",
    "TinyTransformer",
    "tiny_transformer",
    "SharedLayerNet",
    "shared_layer_net",
    "TwoLayerNet",
    "two_layer",
]

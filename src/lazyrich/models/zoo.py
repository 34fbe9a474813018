"""Model zoo: small, plain ``torch.nn`` models used by the experiments.

Axes conventions (every model here follows them)
-----------------------------------------------
* images: ``(n, C, H, W)`` float tensors;
* vectors: ``(n, d)`` float tensors (models that take vectors also accept
  ``(n, *shape)`` and flatten everything after the batch axis);
* text: ``(n, L)`` integer (``torch.long``) token ids;
* outputs: ``(n, c)`` -- logits for classification, ``c = 1`` for scalar
  regression.

Seeding
-------
Every factory takes ``seed`` (an ``int``) or ``generator`` (a
``torch.Generator``), never both.  With ``seed`` the model is built inside
``torch.random.fork_rng`` after seeding the CPU generator, so the weights are
a deterministic function of ``seed`` and the global RNG state is left exactly
as it was.  With ``generator`` one 62-bit seed is drawn from it (advancing it)
and used the same way.  With neither, the global RNG is used, like any
``torch.nn`` constructor.  :func:`two_layer` draws its weights directly from
the generator (see its docstring).

References
----------
* LeCun et al. (1998), LeNet-5;  He et al. (2016), CIFAR ResNet-20;
  Simonyan & Zisserman (2015), VGG-16 -- the architectures of the cone-effect
  paper (Zhou et al., "Main Experimental Setup") and of Kunin et al.
  (LeNet-5 with ReLU and max pooling, "Experimental Details").
* Luo, Xu, Ma, Zhang, "Phase diagram for two-layer ReLU neural networks at
  infinite-width limit", eqs. (1), (3)-(4): :func:`two_layer`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

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
    "NormalizedTwoLayer",
    "two_layer",
]


# --------------------------------------------------------------------------
# activations and seeding helpers
# --------------------------------------------------------------------------

#: Activation names accepted by the factories.  ``"gelu"`` is the erf-free
#: tanh approximation (``nn.GELU(approximate="tanh")``); ``"gelu_erf"`` is the
#: exact erf form.  All others are erf-free.
ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "tanh",
    "gelu",
    "gelu_erf",
    "sigmoid",
    "softplus",
    "silu",
    "leaky_relu",
    "identity",
)


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module by name.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`.  ``"gelu"`` is the tanh approximation
        ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (no erf);
        ``"gelu_erf"`` is the exact ``x Phi(x)``.

    Returns
    -------
    torch.nn.Module
    """
    if not isinstance(name, str):
        raise TypeError(f"activation must be a string such as 'relu', got {type(name).__name__}.")
    key = name.lower()
    table = {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "gelu": lambda: nn.GELU(approximate="tanh"),
        "gelu_erf": nn.GELU,
        "sigmoid": nn.Sigmoid,
        "softplus": nn.Softplus,
        "silu": nn.SiLU,
        "leaky_relu": nn.LeakyReLU,
        "identity": nn.Identity,
    }
    if key not in table:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}.")
    return table[key]()


def _resolve_seed(seed: int | None, generator: torch.Generator | None) -> int | None:
    """Turn the ``seed`` / ``generator`` arguments into one integer seed (or None)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both.")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
        return int(torch.randint(0, 2**62, (1,), generator=generator).item())
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        return int(seed)
    return None


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Build-time context: seed the CPU RNG and restore it afterwards.

    Only the CPU default generator is touched (``fork_rng(devices=[])`` and
    ``torch.default_generator.manual_seed``), so CUDA RNG state is untouched.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def _check_pos_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}.")
    return value


def _kaiming_conv_init(module: nn.Module) -> None:
    """He et al. (2015) normal init (fan_out, ReLU) for every Conv2d, as in He et al. (2016)."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


# --------------------------------------------------------------------------
# MLP and freezing
# --------------------------------------------------------------------------


def mlp(
    widths: Sequence[int],
    activation: str = "relu",
    bias: bool = True,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """Fully connected network ``Flatten -> Linear -> act -> ... -> Linear``.

    Parameters
    ----------
    widths : sequence of int
        Layer widths including input and output, e.g. ``[784, 1024, 10]``
        (one hidden layer).  At least two entries.
    activation : str
        Hidden activation, one of :data:`ACTIVATIONS` (none after the last
        layer).
    bias : bool
        Whether the Linear layers have biases.
    seed, generator
        Seeding, see the module docstring.  Init is the torch default.

    Returns
    -------
    torch.nn.Sequential
        Input ``(n, widths[0])`` or ``(n, C, H, W)`` with ``C*H*W ==
        widths[0]`` (flattened by the leading ``nn.Flatten``); output
        ``(n, widths[-1])``.
    """
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths needs at least input and output sizes, e.g. [784, 10]; got {widths}.")
    for i, w in enumerate(widths):
        _check_pos_int(w, f"widths[{i}]")
    make_activation(activation)  # validate before building
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
            if i < len(widths) - 2:
                layers.append(make_activation(activation))
        return nn.Sequential(*layers)


def with_frozen(model: nn.Module, names: str | Sequence[str]) -> nn.Module:
    """Set ``requires_grad=False`` on the named parameters (in place).

    Parameters
    ----------
    model : torch.nn.Module
    names : str or sequence of str
        Each entry is an exact parameter name (``"1.weight"``) or a module
        prefix (``"1"`` freezes ``"1.weight"`` and ``"1.bias"``), as listed by
        ``model.named_parameters()``.

    Returns
    -------
    torch.nn.Module
        The same ``model``, for chaining.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    params = dict(model.named_parameters())
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}.")
        hits = [p for p in params if p == name or p.startswith(name + ".")]
        if not hits:
            avail = ", ".join(list(params)[:12]) + (", ..." if len(params) > 12 else "")
            raise ValueError(f"no parameter named or prefixed {name!r} in the model; available: {avail}.")
        for p in hits:
            params[p].requires_grad_(False)
    return model


def frozen_mlp(
    widths: Sequence[int],
    frozen_layers: Sequence[int] = (0,),
    activation: str = "relu",
    bias: bool = True,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """An :func:`mlp` whose Linear layers at ``frozen_layers`` are frozen.

    Parameters
    ----------
    widths, activation, bias, seed, generator
        As in :func:`mlp`.
    frozen_layers : sequence of int
        Indices into the list of Linear layers (0 = first, -1 = last); their
        weight and bias get ``requires_grad=False``.  The default freezes the
        first layer (a random-feature model when ``len(widths) == 3``).

    Returns
    -------
    torch.nn.Sequential
    """
    model = mlp(widths, activation, bias, seed=seed, generator=generator)
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = []
    for i in frozen_layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"frozen_layers must hold ints, got {i!r}.")
        if not -len(linear_names) <= i < len(linear_names):
            raise ValueError(f"frozen layer index {i} out of range for {len(linear_names)} Linear layers.")
        chosen.append(linear_names[i])
    return with_frozen(model, chosen)  # type: ignore[return-value]


# --------------------------------------------------------------------------
# LeNet-5
# --------------------------------------------------------------------------


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) for ``(n, C, S, S)`` images.

    ``conv5x5(C->6, pad p) -> act -> pool2 -> conv5x5(6->16) -> act -> pool2
    -> fc(16*s*s -> 120) -> act -> fc(120 -> 84) -> act -> fc(84 -> classes)``.
    The default ReLU + max pooling is the variant Kunin et al. train on MNIST;
    ``activation="tanh", pool="avg"`` gives the classic one.

    Layers are attributes ``conv1, conv2, fc1, fc2, fc3`` so that first/last
    layer rescalings (Kunin et al., LeNet-5 experiment) can address them.

    Parameters
    ----------
    in_channels, num_classes, input_size : int
        Image channels ``C``, number of outputs, side length ``S``.
    activation : str
        One of :data:`ACTIVATIONS`.
    pool : {"max", "avg"}
    padding : int or None
        Zero padding of the first conv.  ``None`` pads up to the classic 32x32
        receptive layout: ``max(0, ceil((32 - S) / 2))``, i.e. 2 for 28x28
        MNIST and 0 for 32x32 CIFAR; the flattened size is then 16*5*5 = 400.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 28,
        activation: str = "relu",
        pool: str = "max",
        padding: int | None = None,
    ) -> None:
        super().__init__()
        _check_pos_int(in_channels, "in_channels")
        _check_pos_int(num_classes, "num_classes")
        _check_pos_int(input_size, "input_size")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}.")
        p = max(0, math.ceil((32 - input_size) / 2)) if padding is None else padding
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise ValueError(f"padding must be a non-negative int or None, got {padding!r}.")
        s = (input_size + 2 * p - 4) // 2  # conv1 then pool
        s = (s - 4) // 2  # conv2 then pool
        if s < 1:
            raise ValueError(
                f"input_size={input_size} with padding={p} is too small for LeNet-5; "
                "use input_size >= 28 (or resize the images) or a larger padding."
            )
        self.input_size = input_size
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=p)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * s * s, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.act = make_activation(activation)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"LeNet5 built for {self.input_size}x{self.input_size} images got spatial shape "
                f"{tuple(x.shape[-2:])}; build it with input_size={x.shape[-1]}."
            )
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = torch.flatten(x, start_dim=-3)
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x)


def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int = 28,
    activation: str = "relu",
    pool: str = "max",
    padding: int | None = None,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> LeNet5:
    """Build a :class:`LeNet5` (1x28x28 MNIST: defaults; 3x32x32 CIFAR: ``in_channels=3, input_size=32``).

    Torch default init.  See :class:`LeNet5` for the arguments and the module
    docstring for ``seed``/``generator``.  Parameter count for 1x28x28 and 10
    classes: 61,706.
    """
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        return LeNet5(in_channels, num_classes, input_size, activation, pool, padding)


# --------------------------------------------------------------------------
# CIFAR ResNet-20
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The shortcut is the identity when shapes match and otherwise He et al.
    (2016) option B: a strided 1x1 convolution (no bias) followed by
    BatchNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6 * blocks_per_stage + 2`` (He et al., 2016, Sec. 4.2).

    ``conv3x3(3->c0) -> BN -> ReLU -> 3 stages of BasicBlocks (channels c0,
    c1, c2; strides 1, 2, 2) -> global average pool -> Linear(c2 -> classes)``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        channels: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 3,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        if len(channels) != 3:
            raise ValueError(f"channels must have 3 entries (one per stage), got {channels}.")
        for i, c in enumerate(channels):
            _check_pos_int(c, f"channels[{i}]")
        _check_pos_int(num_classes, "num_classes")
        _check_pos_int(blocks_per_stage, "blocks_per_stage")
        _check_pos_int(in_channels, "in_channels")
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        stages = []
        c_in = channels[0]
        for j, c in enumerate(channels):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (j > 0 and b == 0) else 1
                blocks.append(BasicBlock(c_in, c, stride))
                c_in = c
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), start_dim=-3)
        return self.fc(x)


def resnet20(
    num_classes: int = 10,
    channels: Sequence[int] = (16, 32, 64),
    in_channels: int = 3,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> CifarResNet:
    """CIFAR ResNet-20 (He et al., 2016): 3 stages x 3 basic blocks, BatchNorm.

    Downsampling shortcuts use **option B** (1x1 conv + BN), chosen for
    simplicity; this adds 2,752 parameters to the option-A (zero-padding)
    count of 269,722, giving 272,474 parameters for the defaults.
    Convolutions use He (fan_out, ReLU) normal init as in He et al.; BN and
    the final Linear use torch defaults.  Input ``(n, 3, 32, 32)``, output
    ``(n, num_classes)``.
    """
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        model = CifarResNet(num_classes, channels, 3, in_channels)
        _kaiming_conv_init(model)
    return model


# --------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------

#: VGG configuration "D" (VGG-16): conv widths, ``"M"`` = 2x2 max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """VGG-style net: ``features`` (conv3x3 pad 1 [+BN] + act, ``"M"`` = maxpool 2) then a Linear head.

    The head is ``Linear(c_last * s * s -> num_classes)`` where ``s`` is the
    spatial size after all pools (1 for VGG-16 on 32x32, so 512 -> classes).
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 10,
        batch_norm: bool = True,
        in_channels: int = 3,
        input_size: int = 32,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        _check_pos_int(num_classes, "num_classes")
        _check_pos_int(in_channels, "in_channels")
        _check_pos_int(input_size, "input_size")
        cfg = list(cfg)
        layers: list[nn.Module] = []
        c, s = in_channels, input_size
        for item in cfg:
            if item == "M":
                if s < 2:
                    raise ValueError(f"too many 'M' pools in cfg for input_size={input_size}.")
                layers.append(nn.MaxPool2d(2))
                s //= 2
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                layers.append(nn.Conv2d(c, item, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(item))
                layers.append(make_activation(activation))
                c = item
            else:
                raise ValueError(f"cfg entries must be positive ints or 'M', got {item!r}.")
        if not any(isinstance(i, int) for i in cfg):
            raise ValueError("cfg must contain at least one convolution width.")
        self.input_size = input_size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * s * s, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, start_dim=-3))


def vgg_small(
    num_classes: int = 10,
    cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M"),
    batch_norm: bool = True,
    in_channels: int = 3,
    input_size: int = 32,
    activation: str = "relu",
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> VGG:
    """A small VGG-style conv net (default: 2x[32] + pool, 2x[64] + pool, Linear(64*8*8 -> classes)).

    Convs use He (fan_out, ReLU) normal init with zero bias; BN and Linear
    use torch defaults.
    """
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        model = VGG(cfg, num_classes, batch_norm, in_channels, input_size, activation)
        _kaiming_conv_init(model)
    return model


def vgg16(
    num_classes: int = 10,
    batch_norm: bool = True,
    in_channels: int = 3,
    input_size: int = 32,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> VGG:
    """VGG-16 for CIFAR (Simonyan & Zisserman, 2015, cfg "D") with BatchNorm and a 512 -> classes head.

    13 conv3x3 layers (with bias) + BN + ReLU, five 2x2 max pools (32 -> 1),
    one ``Linear(512, num_classes)``: 14,728,266 parameters for 10 classes.
    """
    return vgg_small(
        num_classes, VGG16_CFG, batch_norm, in_channels, input_size, "relu", seed=seed, generator=generator
    )


# --------------------------------------------------------------------------
# Tiny transformer
# --------------------------------------------------------------------------


class TinyTransformer(nn.Module):
    """Token + learned positional embedding -> TransformerEncoder -> mean pool -> Linear.

    Input ``(n, L)`` integer tokens with ``L <= seq_len``; output ``(n,
    num_classes)``.  Encoder layers are post-norm ``nn.TransformerEncoderLayer``
    (``batch_first=True``, ``dropout=0.0``, ReLU feed-forward of width
    ``dim_feedforward``) followed by a final ``nn.LayerNorm``.  Positions are
    an ``nn.Embedding(seq_len, d_model)`` (N(0, 1) init like the tokens).
    """

    def __init__(
        self,
        vocab_size: int = 50,
        seq_len: int = 8,
        d_model: int = 16,
        nhead: int = 2,
        num_layers: int = 1,
        num_classes: int = 3,
        dim_feedforward: int | None = None,
    ) -> None:
        super().__init__()
        for v, n in [
            (vocab_size, "vocab_size"),
            (seq_len, "seq_len"),
            (d_model, "d_model"),
            (nhead, "nhead"),
            (num_layers, "num_layers"),
            (num_classes, "num_classes"),
        ]:
            _check_pos_int(v, n)
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} must be divisible by nhead={nhead}.")
        ff = 4 * d_model if dim_feedforward is None else _check_pos_int(dim_feedforward, "dim_feedforward")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=ff, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
            raise TypeError(f"TinyTransformer takes integer token ids (torch.long), got dtype {tokens.dtype}.")
        length = tokens.shape[-1]
        if length > self.seq_len:
            raise ValueError(f"sequence length {length} exceeds seq_len={self.seq_len}; build with a larger seq_len.")
        pos = torch.arange(length, device=tokens.device)
        h = self.tok(tokens) + self.pos(pos)
        h = self.encoder(h)
        return self.head(h.mean(dim=-2))


def tiny_transformer(
    vocab_size: int = 50,
    seq_len: int = 8,
    d_model: int = 16,
    nhead: int = 2,
    num_layers: int = 1,
    num_classes: int = 3,
    dim_feedforward: int | None = None,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> TinyTransformer:
    """Build a :class:`TinyTransformer` (torch default init)."""
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        return TinyTransformer(vocab_size, seq_len, d_model, nhead, num_layers, num_classes, dim_feedforward)


# --------------------------------------------------------------------------
# Weight sharing
# --------------------------------------------------------------------------


class SharedLayerNet(nn.Module):
    """A net that applies the *same* ``nn.Linear`` several times in one forward.

    ``h = flatten(x); repeat `repeats` times: h = act(shared(h)); out = head(h)``
    with ``shared: Linear(d, d)`` and ``head: Linear(d, num_classes)``.  The
    shared weight appears once in ``parameters()`` and its gradient sums the
    contributions of every use -- a test case for tangent-kernel code.

    Input ``(n, d)`` (or ``(n, *shape)`` with ``prod(shape) == d``); output
    ``(n, num_classes)``.
    """

    def __init__(
        self,
        d: int = 8,
        num_classes: int = 3,
        repeats: int = 2,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_pos_int(d, "d")
        _check_pos_int(num_classes, "num_classes")
        _check_pos_int(repeats, "repeats")
        self.d = d
        self.repeats = repeats
        self.shared = nn.Linear(d, d, bias=bias)
        self.act = make_activation(activation)
        self.head = nn.Linear(d, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(start_dim=1) if x.dim() > 2 else x
        for _ in range(self.repeats):
            h = self.act(self.shared(h))
        return self.head(h)


def shared_layer_net(
    d: int = 8,
    num_classes: int = 3,
    repeats: int = 2,
    activation: str = "relu",
    bias: bool = True,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> SharedLayerNet:
    """Build a :class:`SharedLayerNet` (torch default init)."""
    s = _resolve_seed(seed, generator)
    with _seeded(s):
        return SharedLayerNet(d, num_classes, repeats, activation, bias)


# --------------------------------------------------------------------------
# Two-layer net of Luo et al.
# --------------------------------------------------------------------------


class TwoLayerNet(nn.Module):
    """Two-layer net of Luo et al., eq. (1)/(3): ``f(x) = (1/alpha) sum_k a_k sigma(w_k^T x)``.

    Parameters (``nn.Parameter``)
    -----------------------------
    w : (m, d) or (m, d + 1)
        Input weights, row ``k`` is ``w_k``.  With ``bias=True`` the paper's
        convention is used: ``x`` is expanded to ``(x^T, 1)^T`` and ``w_k`` to
        ``(w_k^T, b_k)^T``, so the bias is the **last column** of ``w`` and is
        initialized and scaled exactly like the other input weights.  Then
        ``theta_w = vec(w)`` includes the biases, as in Luo et al. eq. (16).
    a : (m, out_features)
        Output weights (``out_features = 1`` is the paper's scalar model).

    Initialization (eq. (4)): ``a_k ~ N(0, beta1^2)``, ``w_k ~ N(0, beta2^2 I)``.

    ``symmetric=True`` is the antisymmetric initialization (ASI) trick of Zhang et al. (2019) used by
    Luo et al. (Remark 5) and Kunin et al.: ``m`` (even) is the total width; the first ``m/2`` neurons
    are drawn from eq. (4), the last ``m/2`` are copies with flipped output weights
    (``w_{k+m/2} = w_k``, ``a_{k+m/2} = -a_k``).  Each half is evaluated on its own, so the two halves
    cancel bit for bit and ``f_0(x) = 0`` exactly; the marginal law of every neuron is still eq. (4).
    Training then moves the halves apart as usual.

    Input ``(n, d)`` (or ``(n, *shape)``, flattened); output ``(n,
    out_features)``.
    """

    def __init__(
        self,
        d: int,
        m: int,
        activation: str = "relu",
        alpha: float = 1.0,
        beta1: float = 1.0,
        beta2: float = 1.0,
        bias: bool = False,
        out_features: int = 1,
        generator: torch.Generator | None = None,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        _check_pos_int(d, "d")
        _check_pos_int(m, "m")
        _check_pos_int(out_features, "out_features")
        for v, n in [(alpha, "alpha"), (beta1, "beta1"), (beta2, "beta2")]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{n} must be a positive float, got {v!r}.")
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{n} must be a positive finite float, got {v}.")
        if not isinstance(symmetric, bool):
            raise TypeError(f"symmetric must be True or False, got {symmetric!r}.")
        if symmetric and m % 2:
            raise ValueError(f"symmetric=True duplicates neurons, so m must be even; got m={m} (use {m + 1}).")
        self.d, self.m, self.bias = d, m, bool(bias)
        self.symmetric = symmetric
        self.alpha, self.beta1, self.beta2 = float(alpha), float(beta1), float(beta2)
        self.activation = activation
        self.act = make_activation(activation)
        d_eff = d + int(self.bias)
        # Draw order: w first, then a (documented so that seeds are stable).
        m_draw = m // 2 if symmetric else m
        w = torch.randn(m_draw, d_eff, generator=generator) * self.beta2
        a = torch.randn(m_draw, out_features, generator=generator) * self.beta1
        if symmetric:
            w, a = torch.cat([w, w]), torch.cat([a, -a])
        self.w = nn.Parameter(w)
        self.a = nn.Parameter(a)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:
            x = x.flatten(start_dim=1)
        if x.shape[-1] != self.d:
            raise ValueError(f"TwoLayerNet expects inputs with d={self.d} features, got {x.shape[-1]}.")
        if self.bias:
            x = torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._expand(x)
        if self.symmetric:
            h = self.m // 2
            out = self.act(x @ self.w[:h].T) @ self.a[:h] + self.act(x @ self.w[h:].T) @ self.a[h:]
            return out / self.alpha
        return (self.act(x @ self.w.T) @ self.a) / self.alpha

    @property
    def kappa(self) -> float:
        """Energetic scaling parameter ``kappa = beta1 beta2 / alpha``, Luo et al. eq. (8)."""
        return self.beta1 * self.beta2 / self.alpha

    @property
    def kappa_prime(self) -> float:
        """Dynamical scaling parameter ``kappa' = beta1 / beta2``, Luo et al. eq. (8)."""
        return self.beta1 / self.beta2

    def normalized(self) -> "NormalizedTwoLayer":
        """The normalized model of Luo et al. eqs. (7)-(13) at the current parameters (detached copies):
        ``a_bar = a / beta1``, ``w_bar = w / beta2`` with ``kappa``, ``kappa'``; see :class:`NormalizedTwoLayer`."""
        return NormalizedTwoLayer(kappa=self.kappa, kappa_prime=self.kappa_prime,
                                  a=self.a.detach() / self.beta1, w=self.w.detach() / self.beta2,
                                  beta1=self.beta1, beta2=self.beta2, bias=self.bias,
                                  activation=self.activation)

    def load_normalized(self, view: "NormalizedTwoLayer") -> "TwoLayerNet":
        """Set ``a = beta1 a_bar``, ``w = beta2 w_bar`` from a normalized view (inverse of :meth:`normalized`)."""
        if view.a.shape != self.a.shape or view.w.shape != self.w.shape:
            raise ValueError(f"the view has a {tuple(view.a.shape)}, w {tuple(view.w.shape)}; this net needs "
                             f"a {tuple(self.a.shape)}, w {tuple(self.w.shape)}: take the view of a net of the same size.")
        with torch.no_grad():
            self.a.copy_(view.a * self.beta1)
            self.w.copy_(view.w * self.beta2)
        return self

    def extra_repr(self) -> str:
        return (
            f"d={self.d}, m={self.m}, activation={self.activation!r}, alpha={self.alpha}, "
            f"beta1={self.beta1}, beta2={self.beta2}, bias={self.bias}, symmetric={self.symmetric}"
        )


class NormalizedTwoLayer:
    """Normalized two-layer model of Luo et al. eq. (9): ``f(x) = kappa sum_k a_bar_k sigma(w_bar_k . x)``,
    risk eq. (10), trained by the weighted flow eq. (12) ``d q_bar_k / d t_bar = -M_kappa' grad R_kappa``
    with mobility ``M_kappa' = diag(1/kappa', kappa' I_d)`` (eq. (13)) and ``t_bar = t / (beta1 beta2)``
    (eq. (7)).  Built by :meth:`TwoLayerNet.normalized`; tensors ``a`` (m, out), ``w`` (m, d_eff).
    """

    def __init__(self, *, kappa: float, kappa_prime: float, a: torch.Tensor, w: torch.Tensor,
                 beta1: float, beta2: float, bias: bool, activation: str = "relu") -> None:
        self.kappa, self.kappa_prime = float(kappa), float(kappa_prime)
        self.a, self.w = a, w
        self.beta1, self.beta2, self.bias = float(beta1), float(beta2), bool(bias)
        self.activation = activation
        self._act = make_activation(activation)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1) if x.dim() > 2 else x
        return torch.cat([x, x.new_ones(x.shape[:-1] + (1,))], dim=-1) if self.bias else x

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None, w: torch.Tensor | None = None) -> torch.Tensor:
        """``kappa * sigma(x w_bar^T) a_bar``, eq. (9), shape (n, out)."""
        a = self.a if a is None else a
        w = self.w if w is None else w
        return self.kappa * (self._act(self._expand(x) @ w.T) @ a)

    __call__ = forward

    def velocity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d a_bar/d t_bar, d w_bar/d t_bar)`` of the weighted flow eq. (12)-(13) for the risk eq. (10)
        ``R = 1/(2n) sum_i (f(x_i) - y_i)^2`` (``y`` of shape (n, out) or (n,))."""
        a = self.a.detach().clone().requires_grad_(True)
        w = self.w.detach().clone().requires_grad_(True)
        f = self.forward(x, a, w)
        risk = 0.5 * ((f - y.reshape(f.shape)) ** 2).mean(0).sum()
        ga, gw = torch.autograd.grad(risk, (a, w))
        return -ga / self.kappa_prime, -self.kappa_prime * gw

    def time(self, t):
        """Normalized time ``t_bar = t / (beta1 beta2)`` of an original flow time ``t`` (eq. (7))."""
        return t / (self.beta1 * self.beta2)


def two_layer(
    d: int,
    m: int,
    activation: str = "relu",
    alpha: float = 1.0,
    beta1: float = 1.0,
    beta2: float = 1.0,
    bias: bool = False,
    out_features: int = 1,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    symmetric: bool = False,
) -> TwoLayerNet:
    """Luo et al. two-layer net, eqs. (1), (3)-(4); see :class:`TwoLayerNet`.

    ``f(x) = (1/alpha) sum_{k=1}^m a_k sigma(w_k^T x)`` with
    ``a_k ~ N(0, beta1^2)`` and ``w_k ~ N(0, beta2^2 I_d)`` -- note that
    **beta1 scales the output weights a and beta2 the input weights w**, as in
    eq. (4) of the paper (kappa = beta1 beta2 / alpha, kappa' = beta1 / beta2,
    eq. (8)).  The NTK scaling of Table 1 is ``alpha = sqrt(m), beta1 = beta2
    = 1``; mean field is ``alpha = m``.

    Randomness: with ``generator`` the weights are drawn directly from it
    (``w`` first, then ``a``); with ``seed`` from ``torch.Generator().manual_seed(seed)``;
    with neither from the global RNG.  ``symmetric=True``: antisymmetric initialization (``f_0 = 0``
    exactly, ``m`` even), see :class:`TwoLayerNet`.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
    if seed is not None:
        generator = torch.Generator().manual_seed(_resolve_seed(seed, None))  # type: ignore[arg-type]
    return TwoLayerNet(d, m, activation, alpha, beta1, beta2, bias, out_features, generator, symmetric)

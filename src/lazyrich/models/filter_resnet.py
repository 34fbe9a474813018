"""The small ResNet of the DAWNBench CIFAR-10 script (davidcpage/cifar10-fast) with large first-layer
filters, as used by Kunin et al., *Get rich quick*, "Experimental Details", "Gabor Filters" ("we increase
the convolution kernel size from 3x3 to 15x15").

Layout (cifar10-fast's ``net()``): prep ``conv(3 -> w, k x k) - BN - ReLU``; layer 1 ``conv(w -> 2w) - BN -
ReLU - maxpool 2`` plus a residual ``2 x (conv - BN - ReLU)``; layer 2 ``conv(2w -> 4w) - BN - ReLU - maxpool
2``; layer 3 ``conv(4w -> 8w) - BN - ReLU - maxpool 2`` plus a residual; global max-pool, ``Linear(8w, c)``
times 0.125.  All convolutions but the first are 3x3; the first is ``first_kernel x first_kernel``
(15 in the paper, ``padding = k // 2``).  ``w = 64`` is the original width.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FilterResNet", "filter_resnet"]


def _cbr(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(c, c), _cbr(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FilterResNet(nn.Module):
    """See the module docstring.  Input ``(n, in_channels, H, W)``, output ``(n, num_classes)``;
    ``self.prep[0]`` is the first-layer convolution whose filters the experiment studies."""

    def __init__(self, width: int = 64, first_kernel: int = 15, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        for v, name in [(width, "width"), (first_kernel, "first_kernel"), (num_classes, "num_classes"),
                        (in_channels, "in_channels")]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        if first_kernel % 2 == 0:
            raise ValueError(f"first_kernel must be odd (padding k // 2 keeps the size), got {first_kernel}.")
        w = width
        self.prep = _cbr(in_channels, w, first_kernel)
        self.layer1 = nn.Sequential(_cbr(w, 2 * w), nn.MaxPool2d(2), _Residual(2 * w))
        self.layer2 = nn.Sequential(_cbr(2 * w, 4 * w), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(_cbr(4 * w, 8 * w), nn.MaxPool2d(2), _Residual(8 * w))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(8 * w, num_classes, bias=False)
        self.scale = 0.125

    @property
    def first_layer(self) -> nn.Conv2d:
        return self.prep[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.scale * self.linear(self.pool(h).flatten(1))


def filter_resnet(width: int = 64, first_kernel: int = 15, num_classes: int = 10, in_channels: int = 3, *,
                  seed: int = 0) -> FilterResNet:
    """A :class:`FilterResNet` with torch's default initialization under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return FilterResNet(width, first_kernel, num_classes, in_channels)

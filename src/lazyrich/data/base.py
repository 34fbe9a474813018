"""The data set container :class:`Dataset` and the argument check shared by every loader.

Imported by :mod:`~lazyrich.data.datasets`, :mod:`~lazyrich.data.mnist1d`, :mod:`~lazyrich.data.readers` and
:mod:`~lazyrich.data.dispatch`; it imports none of them, so the data modules form no import circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Dataset"]


def _check_int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


# --------------------------------------------------------------------------
# container
# --------------------------------------------------------------------------


@dataclass
class Dataset:
    """A train/test split of tensors.

    Attributes
    ----------
    x_train, x_test : torch.Tensor
        ``float32`` inputs, ``(n, *input_shape)``.
    y_train, y_test : torch.Tensor
        ``int64`` labels ``(n,)`` in ``[0, num_classes)``, or, for regression
        (``num_classes is None``), ``float32`` targets ``(n, k)``.
    num_classes : int or None
        Number of classes; ``None`` for regression.
    name : str
        Short description, e.g. ``"digits"``.
    info : dict
        Extra generator metadata (e.g. the teacher weights of
        :func:`gaussian_teacher`).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("x_train", "y_train", "x_test", "y_test"):
            if not isinstance(getattr(self, attr), torch.Tensor):
                raise TypeError(f"Dataset.{attr} must be a torch.Tensor, got {type(getattr(self, attr)).__name__}.")
        for attr in ("x_train", "x_test"):
            if getattr(self, attr).dtype != torch.float32:
                raise TypeError(f"Dataset.{attr} must be float32, got {getattr(self, attr).dtype}; convert with .float().")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test inputs have different shapes {tuple(self.x_train.shape[1:])} "
                f"and {tuple(self.x_test.shape[1:])}."
            )
        for xs, ys in (("x_train", "y_train"), ("x_test", "y_test")):
            if getattr(self, xs).shape[0] != getattr(self, ys).shape[0]:
                raise ValueError(
                    f"Dataset.{xs} has {getattr(self, xs).shape[0]} rows but Dataset.{ys} has {getattr(self, ys).shape[0]}."
                )
        if self.num_classes is None:
            for attr in ("y_train", "y_test"):
                y = getattr(self, attr)
                if y.dtype != torch.float32 or y.dim() != 2:
                    raise TypeError(f"regression targets Dataset.{attr} must be float32 of shape (n, k), got {y.dtype} {tuple(y.shape)}.")
        else:
            if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
                raise ValueError(f"num_classes must be a positive int or None, got {self.num_classes!r}.")
            for attr in ("y_train", "y_test"):
                y = getattr(self, attr)
                if y.dtype != torch.int64 or y.dim() != 1:
                    raise TypeError(f"labels Dataset.{attr} must be int64 of shape (n,), got {y.dtype} {tuple(y.shape)}.")
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                    raise ValueError(f"labels in Dataset.{attr} must lie in [0, {self.num_classes}).")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return "regression" if self.num_classes is None else "classification"

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """Random subsets (without replacement) of the train and test splits.

        ``None`` keeps a split whole.  Rows keep their original relative order.
        """
        g = torch.Generator().manual_seed(_check_int(seed, "seed"))

        def pick(x: torch.Tensor, y: torch.Tensor, k: int | None, which: str) -> tuple[torch.Tensor, torch.Tensor]:
            if k is None:
                return x, y
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= x.shape[0]:
                raise ValueError(f"{which} must be an int in [0, {x.shape[0]}], got {k!r}.")
            idx = torch.randperm(x.shape[0], generator=g)[: int(k)].sort().values
            return x[idx], y[idx]

        xtr, ytr = pick(self.x_train, self.y_train, n_train, "n_train")
        xte, yte = pick(self.x_test, self.y_test, n_test, "n_test")
        return Dataset(xtr, ytr, xte, yte, self.num_classes, self.name, dict(self.info))

    def select_classes(self, classes: Sequence[int]) -> Dataset:
        """Keep only ``classes`` and relabel them ``0, 1, ...`` in the given order.

        E.g. ``cifar.select_classes([3, 7])`` gives the cats (0) vs horses (1)
        task of Hu et al.
        """
        if self.num_classes is None:
            raise ValueError("select_classes needs a classification data set; this one is regression.")
        if isinstance(classes, (str, bytes)) or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes
        ):
            raise TypeError(f"classes must be a list of int labels, e.g. [3, 7], got {classes!r}.")
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be a non-empty list of distinct labels, got {classes}.")
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"classes {bad} are outside [0, {self.num_classes}).")
        lut = torch.full((self.num_classes,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))

        def keep(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = lut[y] >= 0
            return x[m], lut[y[m]]

        xtr, ytr = keep(self.x_train, self.y_train)
        xte, yte = keep(self.x_test, self.y_test)
        info = dict(self.info, classes=classes)
        return Dataset(xtr, ytr, xte, yte, len(classes), f"{self.name}{classes}", info)

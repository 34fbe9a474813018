"""``load_dataset``: every data set of :mod:`lazyrich.data` by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lazyrich.data.base import Dataset
from lazyrich.data.datasets import gaussian_mixture, gaussian_teacher, load_digits
from lazyrich.data.mnist1d import make_mnist1d
from lazyrich.data.readers import read_cifar10, read_mnist

__all__ = ["DATASET_NAMES", "load_dataset"]

#: Names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = ("cifar10", "digits", "gaussian_mixture", "gaussian_teacher", "mnist", "mnist1d")

_ALIASES = {"cifar_10": "cifar10", "mnist_1d": "mnist1d", "sklearn_digits": "digits"}


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by name; keyword arguments go to the loader.

    ============================  ====================================================
    name                          loader
    ============================  ====================================================
    ``"digits"``                  :func:`lazyrich.data.datasets.load_digits`
    ``"mnist1d"``                 :func:`lazyrich.data.mnist1d.make_mnist1d`
    ``"mnist"``                   :func:`lazyrich.data.readers.read_mnist` (``root=``)
    ``"cifar10"``                 :func:`lazyrich.data.readers.read_cifar10` (``root=``)
    ``"gaussian_mixture"``        :func:`lazyrich.data.datasets.gaussian_mixture`
    ``"gaussian_teacher"``        :func:`lazyrich.data.datasets.gaussian_teacher`
    ============================  ====================================================

    Names are case-insensitive and ``-`` may replace ``_`` (``"CIFAR-10"`` works).
    """
    if not isinstance(name, str):
        raise TypeError(f"data set name must be a string, got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    loaders: dict[str, Callable[..., Dataset]] = {
        "digits": load_digits,
        "mnist1d": make_mnist1d,
        "mnist": read_mnist,
        "cifar10": read_cifar10,
        "gaussian_mixture": gaussian_mixture,
        "gaussian_teacher": gaussian_teacher,
    }
    if key not in loaders:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}.")
    if key in ("mnist", "cifar10") and "root" not in kwargs:
        raise TypeError(f"load_dataset({key!r}) needs root='path/to/dir' pointing at the directory holding its files.")
    return loaders[key](**kwargs)

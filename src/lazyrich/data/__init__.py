"""lazyrich.data: local data sets in one container type, :class:`Dataset`.

Nothing is downloaded.  Inputs are float32 (images ``(n, C, H, W)``, vectors
``(n, d)``), labels int64 ``(n,)`` (regression targets float32 ``(n, k)``).
"""

from lazyrich.data.datasets import (
    DATASET_NAMES,
    Dataset,
    gaussian_mixture,
    gaussian_teacher,
    load_dataset,
    load_digits,
    normalize_to_sphere,
    sample_sphere,
)
from lazyrich.data.mnist1d import MNIST1D_RAW_TEMPLATES, make_mnist1d, mnist1d_templates
from lazyrich.data.rhm import RHM, make_rhm, sample_rhm
from lazyrich.data.readers import CIFAR10_FILES, MNIST_FILES, read_cifar10, read_idx, read_mnist

__all__ = [
    "Dataset",
    "DATASET_NAMES",
    "load_dataset",
    "load_digits",
    "make_mnist1d",
    "mnist1d_templates",
    "MNIST1D_RAW_TEMPLATES",
    "sample_sphere",
    "normalize_to_sphere",
    "gaussian_teacher",
    "gaussian_mixture",
    "read_idx",
    "read_mnist",
    "read_cifar10",
    "MNIST_FILES",
    "CIFAR10_FILES",
    "RHM",
    "sample_rhm",
    "make_rhm",
]

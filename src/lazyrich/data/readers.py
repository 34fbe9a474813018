"""Readers for MNIST (IDX files) and CIFAR-10 (python pickle batches) already on disk.

Nothing is downloaded: point the readers at a directory that holds the
original files.

* MNIST (LeCun et al., 1998): ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``), in ``root``
  or in ``root/MNIST/raw`` (the torchvision layout).  IDX format: a
  big-endian 32-bit magic ``0x00 0x00 <type> <ndim>`` (2051 for the 3-D
  ubyte image files, 2049 for the 1-D ubyte label files), ``ndim``
  big-endian 32-bit sizes, then the data in C order.
* CIFAR-10 (Krizhevsky, 2009), "python version": ``data_batch_1`` ..
  ``data_batch_5`` and ``test_batch`` in ``root/cifar-10-batches-py`` or in
  ``root`` itself.  Each is a pickled dict with ``b'data'`` (``(10000,
  3072)`` uint8, rows = 1024 red, 1024 green, 1024 blue values of a 32x32
  image in row-major order) and ``b'labels'`` (10000 ints in 0..9).  The
  pickles are read with an unpickler that only accepts numpy arrays and plain
  Python containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lazyrich.data.base import Dataset

__all__ = ["MNIST_FILES", "CIFAR10_FILES", "read_idx", "read_mnist", "read_cifar10"]

#: Base names of the four MNIST files (each may also end in ``.gz``).
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: The six CIFAR-10 python batch files.
CIFAR10_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

# IDX type byte -> numpy big-endian dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"'{path}' is a corrupt gzip file ({exc}); replace it with a fresh copy.") from None
    if path.suffix == ".gz":
        raise ValueError(f"'{path}' ends in .gz but is not gzip data; replace it with a fresh copy.")
    return raw


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into a native-endian numpy array.

    Parameters
    ----------
    path : str or Path
    expected_magic : int or None
        If given (2051 for MNIST images, 2049 for labels), a different magic
        number raises ``ValueError``.

    Returns
    -------
    numpy.ndarray
        Shape given by the header, dtype from the type byte.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file '{path}' does not exist.")
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"'{path}' is too short ({len(data)} bytes) to be an IDX file; replace it with a fresh copy.")
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"'{path}' has magic number {magic}, expected {expected_magic}; the file is corrupt or not the "
            "MNIST file its name says, so replace it with a fresh copy."
        )
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"'{path}' has magic number {magic}, which is not a valid IDX header; replace it with a fresh copy.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"'{path}' is truncated inside its IDX header; replace it with a fresh copy.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"'{path}' holds {len(data) - header} data bytes but its header {dims} needs {expected}; "
            "the file is truncated or corrupt, so replace it with a fresh copy."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _check_dir(root: str | Path, what: str, expected: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{what} directory '{root}' does not exist; create it and put {expected} in it.")
    return root


def _find_mnist_file(bases: list[Path], name: str) -> Path:
    for base in bases:
        for cand in (base / name, base / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise FileNotFoundError(
        f"MNIST file '{name}' (or '{name}.gz') is missing from '{bases[0]}'; put the original file there."
    )


def _normalize(x_train: torch.Tensor, x_test: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``unit``: already in [0, 1].  ``standardize``: per-channel train mean/std."""
    if normalize == "unit":
        return x_train, x_test, {}
    dims = (0, 2, 3)
    mean = x_train.double().mean(dim=dims, keepdim=True).float()
    std = x_train.double().std(dim=dims, keepdim=True).float()
    return (x_train - mean) / std, (x_test - mean) / std, {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}


def _check_normalize(normalize: str) -> None:
    if normalize not in ("unit", "standardize"):
        raise ValueError(f"normalize must be 'unit' or 'standardize', got {normalize!r}.")


def read_mnist(root: str | Path, normalize: str = "unit") -> Dataset:
    """Read MNIST from the four IDX files in ``root`` (or ``root/MNIST/raw``).

    Parameters
    ----------
    root : str or Path
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each plain or
        ``.gz``).
    normalize : {"unit", "standardize"}
        ``"unit"``: pixels / 255 in [0, 1]; ``"standardize"``: then minus the
        training mean, divided by the training std.

    Returns
    -------
    Dataset
        ``x`` ``(n, 1, 28, 28)`` float32, ``y`` int64 in 0..9.
    """
    _check_normalize(normalize)
    root = _check_dir(root, "MNIST", "the four MNIST IDX files (" + ", ".join(MNIST_FILES.values()) + ")")
    bases = [root, root / "MNIST" / "raw"]
    arrays = {}
    for key, name in MNIST_FILES.items():
        path = _find_mnist_file(bases, name)
        magic = 2051 if key.endswith("images") else 2049
        arrays[key] = (path, read_idx(path, expected_magic=magic))
    out = []
    for split in ("train", "test"):
        (p_img, img), (p_lab, lab) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if img.shape[0] != lab.shape[0]:
            raise ValueError(f"'{p_img}' holds {img.shape[0]} images but '{p_lab}' holds {lab.shape[0]} labels.")
        if lab.size and lab.max() > 9:
            raise ValueError(f"'{p_lab}' contains label {int(lab.max())} > 9; the file is corrupt.")
        out.append(torch.from_numpy(img.astype(np.float32) / 255.0).unsqueeze(1))
        out.append(torch.from_numpy(lab.astype(np.int64)))
    x_tr, y_tr, x_te, y_te = out
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"MNIST train images are {tuple(x_tr.shape[2:])} but test images {tuple(x_te.shape[2:])}.")
    x_tr, x_te, info = _normalize(x_tr, x_te, normalize)
    info.update(root=str(root), normalize=normalize)
    return Dataset(x_tr, y_tr, x_te, y_te, 10, "mnist", info)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED and not (module == "numpy.dtypes" and name.endswith("DType")):
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(
            f"'{path}' is not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc}); replace it with a fresh copy."
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"'{path}' does not hold a CIFAR-10 batch dict (found {type(obj).__name__}).")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"'{path}' lacks the b'data' or b'labels' entry of a CIFAR-10 batch.")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"'{path}' has b'data' of dtype {data.dtype} and shape {data.shape}; expected uint8 (n, 3072).")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise ValueError(f"'{path}' has {labels.shape} labels for {data.shape[0]} images.")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"'{path}' has labels outside 0..9.")
    return data, labels.astype(np.int64)


def read_cifar10(root: str | Path, normalize: str = "unit") -> Dataset:
    """Read CIFAR-10 from the python batches in ``root/cifar-10-batches-py`` or ``root``.

    Parameters
    ----------
    root : str or Path
        Directory containing ``cifar-10-batches-py/`` (as extracted from
        ``cifar-10-python.tar.gz``) or the six batch files directly.
    normalize : {"unit", "standardize"}
        ``"unit"``: pixels / 255; ``"standardize"``: then per-channel
        training mean/std.

    Returns
    -------
    Dataset
        ``x`` ``(n, 3, 32, 32)`` float32 (channels R, G, B), ``y`` int64 in 0..9.
    """
    _check_normalize(normalize)
    root = _check_dir(root, "CIFAR-10", "the extracted 'cifar-10-batches-py' folder")
    sub = root / "cifar-10-batches-py"
    folder = sub if sub.is_dir() else root
    for name in CIFAR10_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"CIFAR-10 file '{name}' is missing from '{folder}'; extract cifar-10-python.tar.gz so that "
                f"'{name}' lies in '{sub}' or in '{root}'."
            )
    parts = [_load_cifar_batch(folder / name) for name in CIFAR10_FILES]

    def to_tensors(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        x = torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        return x, torch.from_numpy(labels)

    x_tr, y_tr = to_tensors(parts[:5])
    x_te, y_te = to_tensors(parts[5:])
    x_tr, x_te, info = _normalize(x_tr, x_te, normalize)
    info.update(root=str(folder), normalize=normalize)
    return Dataset(x_tr, y_tr, x_te, y_te, 10, "cifar10", info)

"""Tests for lazyrich.data.

Oracles: files written here in the true on-disk formats (struct-packed
big-endian IDX headers with magic 2051/2049, gzipped and plain; pickled
CIFAR-10 batch dicts) and read back exactly; scikit-learn's own digits array;
closed-form recomputation of synthetic labels; np.interp re-implementations of
the noise-free MNIST-1D pipeline; sampling statistics with stated tolerances.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lazyrich.data import (
    DATASET_NAMES,
    Dataset,
    gaussian_mixture,
    gaussian_teacher,
    load_dataset,
    load_digits,
    make_mnist1d,
    mnist1d_templates,
    normalize_to_sphere,
    read_cifar10,
    read_idx,
    read_mnist,
    sample_sphere,
)

torch.set_num_threads(1)

# ----------------------------------------------------------------- writers in the true formats


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_file(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_mnist_dir(root: Path, gz, n_train=5, n_test=3, seed=0):
    """Write the four MNIST files; ``gz`` is a bool or a 4-tuple of bools."""
    rng = np.random.default_rng(seed)
    gzs = gz if isinstance(gz, tuple) else (gz,) * 4
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), 2051),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train, dtype=np.uint8), 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), 2051),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test, dtype=np.uint8), 2049),
    }
    root.mkdir(parents=True, exist_ok=True)
    for (name, (arr, magic)), z in zip(arrays.items(), gzs):
        write_file(root / name, idx_bytes(arr, magic), z)
    return {k: v[0] for k, v in arrays.items()}


def cifar_batch(n: int, rng: np.random.Generator, numpy_core_names: bool = True) -> tuple[bytes, dict]:
    d = {
        b"batch_label": b"batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    raw = pickle.dumps(d, protocol=2)
    if numpy_core_names:  # mimic the original files, which name numpy.core.multiarray
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
    return raw, d


def make_cifar_dir(folder: Path, n=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        raw, d = cifar_batch(n, rng)
        (folder / name).write_bytes(raw)
        batches[name] = d
    return batches


# ----------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [False, True, (True, False, False, True)])
def test_read_mnist_roundtrip(tmp_path, gz):
    arrays = make_mnist_dir(tmp_path, gz)
    ds = read_mnist(tmp_path)
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal((ds.x_train[:, 0] * 255).round().numpy().astype(np.uint8), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal((ds.x_test[:, 0] * 255).round().numpy().astype(np.uint8), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.num_classes == 10 and ds.name == "mnist"


def test_read_mnist_torchvision_layout_and_standardize(tmp_path):
    arrays = make_mnist_dir(tmp_path / "MNIST" / "raw", True)
    ds = read_mnist(tmp_path, normalize="standardize")
    x = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), (x - x.mean()) / x.std(ddof=1), rtol=1e-5, atol=1e-5)


def test_read_idx_other_dtypes(tmp_path):
    arr = np.arange(-12, 12, dtype=">i2").reshape(2, 3, 4)
    p = write_file(tmp_path / "a.idx", idx_bytes(arr, 0x00000B03), False)
    out = read_idx(p)
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int16 and out.dtype.isnative


def test_mnist_missing_dir_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        read_mnist(missing)
    assert str(missing) in str(ei.value) and "train-images-idx3-ubyte" in str(ei.value)
    make_mnist_dir(tmp_path, False)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError) as ei:
        read_mnist(tmp_path)
    msg = str(ei.value)
    assert "'t10k-labels-idx1-ubyte'" in msg and str(tmp_path) in msg
    assert "train-images" not in msg  # names exactly the missing file


def test_mnist_corrupt_files(tmp_path):
    arrays = make_mnist_dir(tmp_path, False)
    img = arrays["train-images-idx3-ubyte"]
    # wrong magic (a label header on the image file)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(img, 2049))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 2049, expected 2051"):
        read_mnist(tmp_path)
    # truncated body
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(img, 2051)[:-7])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        read_mnist(tmp_path)
    # bad gzip stream
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz.*corrupt gzip"):
        read_mnist(tmp_path)
    # images / labels count mismatch
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(img[:4], 2051))
    with pytest.raises(ValueError, match="4 images but"):
        read_mnist(tmp_path)


# ----------------------------------------------------------------- CIFAR-10 pickles


@pytest.mark.parametrize("subdir", [True, False])
def test_read_cifar10_roundtrip(tmp_path, subdir):
    folder = tmp_path / "cifar-10-batches-py" if subdir else tmp_path
    batches = make_cifar_dir(folder)
    ds = read_cifar10(tmp_path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    got = (ds.x_train * 255).round().numpy().astype(np.uint8)
    np.testing.assert_array_equal(got.reshape(20, 3072), data)
    # layout: the first 1024 bytes of a row are the red channel, row-major 32x32
    np.testing.assert_array_equal(got[7, 0, 1, :], data[7, 32:64])
    np.testing.assert_array_equal(got[7, 2, 31, 31], data[7, 3071])
    np.testing.assert_array_equal(ds.y_train.numpy(), labels)
    np.testing.assert_array_equal(ds.y_test.numpy(), batches["test_batch"][b"labels"])
    assert ds.y_train.dtype == torch.int64 and ds.num_classes == 10


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cifar10(tmp_path / "nope")
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar_dir(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError) as ei:
        read_cifar10(tmp_path)
    assert "'test_batch'" in str(ei.value) and str(folder) in str(ei.value)
    (folder / "test_batch").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="test_batch"):
        read_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match=r"test_batch.*b'data'"):
        read_cifar10(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_pickle_cannot_run_code(tmp_path):
    make_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_3.*not allowed"):
        read_cifar10(tmp_path)


# ----------------------------------------------------------------- MNIST-1D


def test_mnist1d_determinism_shapes_balance():
    a = make_mnist1d(160, 40, seed=3)
    b = make_mnist1d(160, 40, seed=3)
    c = make_mnist1d(160, 40, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (160, 40) and a.x_test.shape == (40, 40)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    counts = torch.bincount(torch.cat([a.y_train, a.y_test]), minlength=10)
    assert counts.tolist() == [20] * 10  # exactly balanced union
    assert torch.bincount(a.y_train, minlength=10).min() > 0
    x = torch.cat([a.x_train, a.x_test]).double()
    assert abs(x.mean().item()) < 1e-5 and abs(x.std(unbiased=False).item() - 1) < 1e-5
    odd = make_mnist1d(13, 4, seed=0)
    assert odd.n_train == 13 and odd.n_test == 4


def test_mnist1d_templates():
    t = mnist1d_templates()
    assert t.shape == (10, 12)
    np.testing.assert_allclose(t[:, 0], 0, atol=1e-15)
    np.testing.assert_allclose(t[:, -1], 0, atol=1e-12)  # every digit starts and ends at baseline 5
    np.testing.assert_allclose(t.std(axis=1), 1 / 6, rtol=1e-12)


def test_mnist1d_noise_free_pipeline_matches_interp():
    t = mnist1d_templates()
    grid12, grid40 = np.linspace(0, 1, 12), np.linspace(0, 1, 40)
    # no padding/scale/shift/noise/shear: the signal is the template resampled to 40 points
    ds = make_mnist1d(20, 0, seed=0, padding=(0, 0), scale_coeff=0, max_translation=1, corr_noise_scale=0,
                      iid_noise_scale=0, shear_scale=0, standardize=False)
    for x, y in zip(ds.x_train.numpy(), ds.y_train.numpy()):
        np.testing.assert_allclose(x, np.interp(grid40, grid12, t[y] + 1e-8), atol=1e-6)
    # padding 20 + random right shift k < 10 + random scale: each signal is a scaled roll of the padded template
    ds = make_mnist1d(30, 0, seed=1, padding=(20, 20), scale_coeff=0.4, max_translation=10, corr_noise_scale=0,
                      iid_noise_scale=0, shear_scale=0, standardize=False)
    grid32 = np.linspace(0, 1, 32)
    for x, y in zip(ds.x_train.numpy().astype(np.float64), ds.y_train.numpy()):
        base = np.interp(grid32, np.linspace(0, 1, 32), np.concatenate([t[y] + 1e-8, np.zeros(20)]))
        best = None
        for k in range(10):
            cand = np.interp(grid40, grid32, np.roll(base, k))
            s = float(x @ cand / (cand @ cand))
            err = np.abs(x - s * cand).max()
            if best is None or err < best[0]:
                best = (err, s)
        assert best[0] < 1e-6 and 0.8 - 1e-6 <= best[1] <= 1.2 + 1e-6


# ----------------------------------------------------------------- digits


def test_digits_shapes_split_and_values():
    from sklearn.datasets import load_digits as sk_digits

    sk = sk_digits()
    ds = load_digits(test_fraction=0.25, seed=1)
    assert ds.x_train.shape[1:] == (1, 8, 8) and ds.n_train + ds.n_test == 1797
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1 and ds.num_classes == 10
    for c in range(10):
        n_c = int((sk.target == c).sum())
        assert int((ds.y_test == c).sum()) == round(0.25 * n_c)
    # union of the splits is exactly scikit-learn's data / 16 (compare sorted rows with labels)
    ours = np.concatenate([
        np.concatenate([ds.x_train.reshape(-1, 64).numpy(), ds.y_train.numpy()[:, None]], 1),
        np.concatenate([ds.x_test.reshape(-1, 64).numpy(), ds.y_test.numpy()[:, None]], 1),
    ])
    ref = np.concatenate([sk.data / 16.0, sk.target[:, None]], 1)
    np.testing.assert_array_equal(np.unique(ours, axis=0), np.unique(ref, axis=0))
    assert len(np.unique(ours, axis=0)) == len(np.unique(ref, axis=0))
    again = load_digits(test_fraction=0.25, seed=1)
    assert torch.equal(again.x_test, ds.x_test)
    assert not torch.equal(load_digits(test_fraction=0.25, seed=2).y_test, ds.y_test)


def test_digits_resize_and_standardize():
    ds = load_digits(resize_to=28, normalize="standardize")
    assert ds.x_train.shape[1:] == (1, 28, 28)
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-4
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


# ----------------------------------------------------------------- synthetic


def test_sphere():
    x = sample_sphere(50, 7, seed=0)
    np.testing.assert_allclose((x.double() ** 2).sum(1).numpy(), 7.0, rtol=1e-6)
    u = sample_sphere(50, 7, radius=1.0, seed=0)
    np.testing.assert_allclose(u.double().norm(dim=1).numpy(), 1.0, rtol=1e-6)
    assert torch.equal(sample_sphere(5, 3, seed=2), sample_sphere(5, 3, seed=2))
    y = normalize_to_sphere(torch.randn(4, 9, dtype=torch.float64))
    np.testing.assert_allclose((y**2).sum(1).numpy(), 9.0, rtol=1e-12)
    with pytest.raises(ValueError, match="zero row"):
        normalize_to_sphere(torch.zeros(2, 3))


def test_gaussian_teacher_labels_recomputed():
    ds = gaussian_teacher(300, 6, n_test=50, k=4, seed=0)
    w, a = ds.info["teacher_w"].numpy(), ds.info["teacher_a"].numpy()
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, rtol=1e-12)
    assert set(np.unique(a)) <= {-1.0, 1.0}
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        ref = np.maximum(x.double().numpy() @ w.T, 0) @ a
        np.testing.assert_allclose(y[:, 0].double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert ds.num_classes is None and ds.task == "regression" and ds.y_train.shape == (300, 1)
    # label noise has the requested std: sample std rel. sd ~ 1/sqrt(2n); 6 sds tolerance
    n = 4000
    noisy = gaussian_teacher(n, 6, n_test=0, k=4, noise=0.5, seed=0, inputs="unit_sphere")
    w, a = noisy.info["teacher_w"].numpy(), noisy.info["teacher_a"].numpy()
    resid = noisy.y_train[:, 0].double().numpy() - np.maximum(noisy.x_train.double().numpy() @ w.T, 0) @ a
    assert abs(resid.std() / 0.5 - 1) < 6 / math.sqrt(2 * n)
    np.testing.assert_allclose(noisy.x_train.double().norm(dim=1).numpy(), 1.0, rtol=1e-6)


def test_gaussian_mixture_statistics():
    n, d = 4000, 5
    ds = gaussian_mixture(n, d, n_test=101, mean_norm=1.5, noise=1.0, seed=0)
    mu = ds.info["mean"].numpy()
    assert abs(np.linalg.norm(mu) - 1.5) < 1e-12
    assert torch.bincount(ds.y_train).tolist() == [n // 2, n // 2]
    assert torch.bincount(ds.y_test).tolist() == [50, 51]
    x, y = ds.x_train.double().numpy(), ds.y_train.numpy()
    tol = 6 / math.sqrt(n / 2)  # 6 standard errors of a class-mean coordinate (noise sd 1)
    np.testing.assert_allclose(x[y == 1].mean(0), mu, atol=tol)
    np.testing.assert_allclose(x[y == 0].mean(0), -mu, atol=tol)
    np.testing.assert_allclose(x[y == 1].std(0), 1.0, atol=6 / math.sqrt(n))


# ----------------------------------------------------------------- container and dispatch


def test_dataset_validation_and_helpers():
    x = torch.zeros(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    with pytest.raises(TypeError, match="float32"):
        Dataset(x.double(), y, x, y, 3, "t")
    with pytest.raises(TypeError, match="int64"):
        Dataset(x, y.int(), x, y, 3, "t")
    with pytest.raises(ValueError, match="rows"):
        Dataset(x, y[:3], x, y, 3, "t")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        Dataset(x, y, x, y, 2, "t")
    ds = Dataset(torch.arange(12.0).reshape(4, 3), y, x, y, 3, "t")
    assert ds.input_shape == (3,) and ds.n_train == 4 and ds.task == "classification"
    sub = ds.subset(n_train=2, seed=0)
    assert sub.n_train == 2 and sub.n_test == 4
    for row, lab in zip(sub.x_train, sub.y_train):  # rows stay paired with their labels
        i = int(row[0].item()) // 3
        assert lab == y[i]
    two = ds.select_classes([2, 1])
    assert two.num_classes == 2 and two.y_train.tolist() == [1, 0, 1]  # old labels 1, 2, 1
    assert two.x_train[:, 0].tolist() == [3.0, 6.0, 9.0]


def test_load_dataset_dispatch(tmp_path):
    assert set(DATASET_NAMES) == {"digits", "mnist1d", "mnist", "cifar10", "gaussian_mixture", "gaussian_teacher"}
    a = load_dataset("MNIST-1D", n_train=20, n_test=10, seed=1)
    assert torch.equal(a.x_train, make_mnist1d(20, 10, seed=1).x_train)
    assert torch.equal(load_dataset("digits", seed=0).x_test, load_digits(seed=0).x_test)
    assert load_dataset("gaussian_mixture", n_train=10, d=3).num_classes == 2
    make_mnist_dir(tmp_path / "m", False)
    assert load_dataset("mnist", root=tmp_path / "m").n_train == 5
    make_cifar_dir(tmp_path / "c")
    assert load_dataset("CIFAR-10", root=tmp_path / "c").n_test == 4
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="root="):
        load_dataset("mnist")

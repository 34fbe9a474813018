"""Read a run directory and analyse its kernel trajectory (Zhou et al., "On the cone effect in the learning
dynamics": kernel distance eq. (4), kernel velocity eq. (5), Fig. 1a-c and Fig. 2)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import manifest as _manifest
from . import metrics as M
from .store import FORMAT, RunStoreError

__all__ = ["Run", "load_run", "streaming_gram"]

_GRAM_BUDGET = 256 * 1024**2  # bytes of float64 kernel slices held at once


def streaming_gram(files: Sequence[Path], budget_bytes: int = _GRAM_BUDGET) -> np.ndarray:
    """Gram matrix ``G_ij = <K_i, K_j>_F`` (float64) of the ``.npy`` kernels in ``files`` in one pass.

    The kernels are memory-mapped and cut into slabs of leading rows; for each slab the rows of *all* kernels
    are stacked into ``X (T, slab size)`` and ``G += X X^T``. Every byte of every kernel is read exactly once
    and at most ``budget_bytes`` of float64 data are in memory, whatever the number ``T`` of kernels.
    """
    files = [Path(f) for f in files]
    T = len(files)
    if T == 0:
        return np.zeros((0, 0))
    first = _load_kernel(files[0])
    shape = first.shape
    del first
    n_rows = shape[0] if len(shape) else 1
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    rows_per_slab = max(1, int(budget_bytes // max(1, T * row * 8)))
    G = np.zeros((T, T))
    for r0 in range(0, n_rows, rows_per_slab):
        r1 = min(n_rows, r0 + rows_per_slab)
        X = np.empty((T, (r1 - r0) * row), dtype=np.float64)
        for i, f in enumerate(files):
            mm = _load_kernel(f)
            if mm.shape != shape:
                raise ValueError(f"Kernel {f} has shape {mm.shape} but {files[0]} has {shape}; kernels must share the probe set.")
            X[i] = np.asarray(mm[r0:r1] if mm.ndim else mm).reshape(-1)
            del mm
            if not np.isfinite(X[i]).all():
                raise RunStoreError(
                    f"Kernel file {f} holds NaN or infinite values; rerun the run on its directory to set it aside "
                    "and recompute it, or run `lazyrich check` on the run directory to list all damage."
                )
        G += X @ X.T
    return 0.5 * (G + G.T)


def _load_kernel(f: Path) -> np.ndarray:
    """``np.load(f, mmap_mode="r")`` with a message naming the file when it is truncated or not a .npy."""
    try:
        return np.load(f, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise RunStoreError(
            f"Kernel file {f} is truncated or not a .npy file ({e}); rerun the run on its directory to set it aside "
            "and recompute it, or run `lazyrich check` on the run directory to list all damage."
        ) from None


class Run:
    """A recorded run (see :mod:`lazyrich.dynamics.store` for the layout). Use :func:`load_run`.

    Attributes
    ----------
    path : Path
    config, env : dict
    metrics : pandas.DataFrame
    kernel_steps : ndarray of int
        Steps with a stored total kernel, increasing.
    """

    def __init__(self, path, verify: bool = False):
        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not self.path.is_dir():
            raise RunStoreError(f"{self.path} is not a directory; pass the run directory written by a lazyrich run.")
        if not cfg_path.exists():
            raise RunStoreError(f"{self.path} has no config.json, so it is not a lazyrich run; pass a run directory.")
        try:
            self.config = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            raise RunStoreError(f"config.json in {self.path} is corrupt; the run cannot be read.") from None
        if not isinstance(self.config, dict) or self.config.get("format") != FORMAT:
            raise RunStoreError(f"{self.path} is not a lazyrich run directory (config.json format is not '{FORMAT}').")
        try:
            self.env = json.loads((self.path / "env.json").read_text())
        except (OSError, ValueError):
            self.env = {}
        self.check = _manifest.check_run(self.path, checksums=bool(verify))
        if not self.check.ok:
            raise RunStoreError(self.check.sentence())
        if self.check.legacy:
            warnings.warn(
                f"{self.path} has no manifest (written by an older lazyrich): only file sizes and completeness "
                "were checked, not checksums.", RuntimeWarning, stacklevel=3,
            )
        mp = self.path / "metrics.csv"
        try:
            self.metrics = pd.read_csv(mp) if mp.exists() else pd.DataFrame({"step": pd.Series([], dtype="int64")})
        except Exception as e:
            raise RunStoreError(f"metrics.csv in {self.path} is corrupt ({e.__class__.__name__}); the run cannot be read.") from None
        self.kernel_steps = np.asarray(self._steps_of(None), dtype=np.int64)
        self._gram: Dict[Optional[str], np.ndarray] = {}

    # ------------------------------------------------------------------ files
    def _kernel_file(self, step: int, layer: Optional[str] = None) -> Path:
        sub = Path("kernels") / ("total" if layer is None else Path("layers") / layer)
        return self.path / sub / f"step_{int(step):08d}.npy"

    def _steps_of(self, layer: Optional[str]) -> List[int]:
        if layer is None:
            idx = self.path / "kernels" / "index.csv"
            if idx.exists():
                df = pd.read_csv(idx)
                return sorted(set(int(s) for s in df["step"]))  # each file's presence was checked on opening
            d = self.path / "kernels" / "total"
        else:
            d = self.path / "kernels" / "layers" / layer
            if not d.is_dir():
                raise ValueError(f"No per-layer kernels for {layer!r} in {self.path}; available: {self.layers}.")
        if not d.is_dir():
            return []
        return sorted(int(f.stem[5:]) for f in d.glob("step_*.npy"))

    @property
    def layers(self) -> List[str]:
        """Parameter names with stored per-layer kernels."""
        d = self.path / "kernels" / "layers"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def kernel(self, step: int, layer: Optional[str] = None) -> np.ndarray:
        """The stored kernel at ``step`` (read-only memory map, float32); NaN/inf in it raise RunStoreError."""
        f = self._kernel_file(step, layer)
        if not f.exists():
            raise KeyError(f"No kernel stored at step {step}{'' if layer is None else f' for {layer!r}'}; "
                           f"stored steps: {self._steps_of(layer)}.")
        K = _load_kernel(f)
        if not np.isfinite(K).all():
            raise RunStoreError(
                f"Kernel file {f} holds NaN or infinite values; rerun the run on its directory to set it aside and "
                f"recompute it, or run `lazyrich check {self.path}` to list all damage."
            )
        return K

    def probe(self) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(probe_x, probe_y)`` as stored by the tracker (None where absent)."""
        d = self.path / "probe"
        x = np.load(d / "x.npy") if (d / "x.npy").exists() else None
        y = np.load(d / "y.npy") if (d / "y.npy").exists() else None
        return x, y

    def _need(self, k: int, what: str, layer: Optional[str] = None) -> np.ndarray:
        steps = self.kernel_steps if layer is None else np.asarray(self._steps_of(layer))
        if len(steps) < k:
            raise ValueError(f"{what} needs at least {k} stored kernels, found {len(steps)} in {self.path}; "
                             "record the kernel at more steps.")
        return steps

    # ------------------------------------------------------------------ kernel distances
    def kernel_gram(self, layer: Optional[str] = None) -> np.ndarray:
        """``G_ij = <K(t_i), K(t_j)>_F`` over the stored kernels (one streaming pass, cached)."""
        if layer not in self._gram:
            steps = self.kernel_steps if layer is None else self._steps_of(layer)
            self._gram[layer] = streaming_gram([self._kernel_file(s, layer) for s in steps])
        return self._gram[layer]

    def kernel_distance_matrix(self, layer: Optional[str] = None) -> np.ndarray:
        """``S(t_i, t_j)`` (Zhou et al. eq. (4)) between all stored kernels, ``(T, T)``, from :meth:`kernel_gram`."""
        self._need(1, "kernel_distance_matrix", layer)
        return M.gram_to_distance(self.kernel_gram(layer))

    def adjacent_distances(self, dts: Sequence[int] = (1, 2, 4)) -> Dict[int, pd.DataFrame]:
        """``{dt: DataFrame(step, S)}`` with ``S = S(t_i, t_{i+dt})``; ``dt`` counts stored checkpoints (Fig. 1b)."""
        S = self.kernel_distance_matrix()
        T = len(self.kernel_steps)
        out = {}
        for dt in dts:
            dt = int(dt)
            if dt < 1:
                raise ValueError(f"dt must be >= 1 (in units of stored checkpoints), got {dt}.")
            i = np.arange(max(0, T - dt))
            out[dt] = pd.DataFrame({"step": self.kernel_steps[i], "S": S[i, i + dt]})
        return out

    def kernel_velocity(self) -> pd.DataFrame:
        """``v(t_i) = S(t_i, t_{i+1}) / (t_{i+1} - t_i)`` (Zhou et al. eq. (5) with ``dt`` the gap to the next
        stored kernel); ``step`` is ``t_i``."""
        self._need(2, "kernel_velocity")
        S = self.kernel_distance_matrix()
        t = self.kernel_steps
        i = np.arange(len(t) - 1)
        return pd.DataFrame({"step": t[i], "velocity": S[i, i + 1] / (t[i + 1] - t[i])})

    def reference_distances(self, taus: Sequence[int]) -> pd.DataFrame:
        """``S(theta(t), theta(tau))`` for each ``tau`` (Fig. 1a): columns ``step`` and ``S_tau=<tau>``.

        A ``tau`` that is not a stored kernel step is replaced by the nearest stored step, and the column is
        named after the step actually used.
        """
        S = self.kernel_distance_matrix()
        t = self.kernel_steps
        df = pd.DataFrame({"step": t})
        for tau in taus:
            j = int(np.argmin(np.abs(t - int(tau))))
            df[f"S_tau={int(t[j])}"] = S[:, j]
        return df

    def phase_split(self, ratio: float = 0.1) -> dict:
        """End of the fast kernel phase (two-phase picture of Fort et al. / Zhou et al.).

        Method ``"velocity_threshold"`` (:func:`lazyrich.dynamics.metrics.velocity_phase_split`): the first
        checkpoint after the peak of the (3-point running-median) kernel velocity from which the velocity stays
        below ``v_plateau + ratio (v_peak - v_plateau)``, where ``v_plateau`` is the median over the last third
        of the checkpoints. Returns ``dict(step, method, index, threshold, v_peak, v_plateau, ratio)``.
        """
        v = self.kernel_velocity()
        return M.velocity_phase_split(v["step"].to_numpy(), v["velocity"].to_numpy(), ratio=ratio)

    def embedding_2d(self) -> np.ndarray:
        """Classical MDS of the kernel trajectory, ``(T, 2)``; row 0 is the initial (first stored) kernel.

        Distances ``sqrt(2 S)`` = chordal distances of the Frobenius-normalized kernels, which are Euclidean, so
        the embedding is the 2-D PCA of the normalized kernels (Fig. 1c; see
        :func:`lazyrich.dynamics.metrics.classical_mds`).
        """
        return M.classical_mds(self.kernel_distance_matrix(), 2)

    # ------------------------------------------------------------------ per-kernel quantities
    def kernel_alignment(self, y=None, *, centered: bool = False) -> pd.DataFrame:
        """Kernel-target alignment of each stored kernel (``y`` default: the stored probe labels)."""
        if y is None:
            _, y = self.probe()
            if y is None:
                raise ValueError("No probe labels stored in this run; pass y=... (one label/target per probe point).")
        y = np.asarray(y)
        vals = [M.kernel_target_alignment(np.asarray(self.kernel(s)), y, centered=centered) for s in self.kernel_steps]
        return pd.DataFrame({"step": self.kernel_steps, "alignment": vals})

    def effective_rank(self) -> pd.DataFrame:
        """Effective rank (Roy & Vetterli) of each stored kernel."""
        vals = [M.effective_rank(np.asarray(self.kernel(s))) for s in self.kernel_steps]
        return pd.DataFrame({"step": self.kernel_steps, "effective_rank": vals})

    def per_layer_distance(self) -> pd.DataFrame:
        """``S(K_layer(t_0), K_layer(t))`` per stored layer; columns ``step`` and one per layer (outer join)."""
        layers = self.layers
        if not layers:
            raise ValueError("This run stored no per-layer kernels; record with per_layer=True.")
        df = pd.DataFrame({"step": pd.Series([], dtype="int64")})
        for layer in layers:
            steps = self._steps_of(layer)
            if not steps:
                continue
            G = self.kernel_gram(layer)
            d = np.sqrt(np.clip(np.diag(G), 0, None))
            with np.errstate(divide="ignore", invalid="ignore"):
                s = 1.0 - G[0] / (d[0] * d)
            s[0] = 0.0
            part = pd.DataFrame({"step": np.asarray(steps, dtype=np.int64), layer: s})
            df = part if df.empty else df.merge(part, on="step", how="outer")
        return df.sort_values("step").reset_index(drop=True)

    def deltas(self) -> Tuple[np.ndarray, np.ndarray]:
        """Per-neuron conserved quantities of a two-layer net: ``(steps (T,), delta (T, h))``."""
        d = self.path / "conserved" / "delta"
        files = sorted(d.glob("step_*.npy")) if d.is_dir() else []
        if not files:
            raise ValueError("No conserved delta_k stored: the tracked model was not a two-layer net.")
        steps = np.array([int(f.stem[5:]) for f in files])
        return steps, np.stack([np.load(f) for f in files])

    def switching(self) -> Optional[pd.DataFrame]:
        """The switching experiment's table (``switching.csv``), or None."""
        p = self.path / "switching.csv"
        return pd.read_csv(p) if p.exists() else None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, experiment={self.config.get('experiment')!r}, kernels={len(self.kernel_steps)})"


def load_run(path, *, verify: bool = False) -> Run:
    """Open a run directory written by :class:`lazyrich.dynamics.RunStore` / :class:`Tracker`.

    Checks against the run's manifest (:mod:`lazyrich.dynamics.manifest`) first: always that every recorded file
    is present with its recorded size and every indexed kernel exists (cheap); with ``verify=True`` also every
    file's SHA-256 and that no ``.npy`` holds NaN/inf. Kernels read later are checked for NaN/inf as they are
    read. Damage raises :class:`RunStoreError`: one sentence naming the file and the fix.
    """
    return Run(path, verify=verify)

"""On-disk run directories: config, environment record, metrics table, kernels, checkpoints.

Layout (readable with numpy/pandas alone)::

    run_dir/
      config.json              {"format": "lazyrich-run", "format_version": 1, "experiment": ..., ...}
      env.json                 versions, git commit (or null), seed, device, hostname, created
      metrics.csv              one row per recorded step, "step" first
      kernels/index.csv        step,file  (row written after the .npy is complete)
      kernels/total/step_00000100.npy          float32
      kernels/layers/<param>/step_00000100.npy float32 (optional)
      checkpoints/step_00000100.pt             {"step", "model", "optimizer", "rng", "extra"}
      figures/
      manifest.jsonl           size and SHA-256 of every finished file (:mod:`lazyrich.dynamics.manifest`)
      .lock                    held (flock) by the process writing into the run (:mod:`lazyrich.dynamics.runlock`)

Every file is written to a temporary name in the same directory and moved into place with ``os.replace``
(atomic on POSIX), so a run killed at any moment (even ``kill -9``) leaves only complete files; a step counts
as recorded once its metrics row exists. Right after the move the file's size and checksum are appended to
the manifest, so later damage (a deleted, truncated or altered file, a kernel full of NaN) is detected: by
:func:`lazyrich.dynamics.load_run` (presence and sizes always, checksums with ``verify=True``), by
``lazyrich check RUN_DIR`` (everything), and when a run is resumed: :class:`RunStore` then verifies every file,
sets damaged ones aside as ``<name>.damaged`` (never deletes them), drops the metrics rows of the steps they
belong to and makes training resume from the last intact checkpoint at or before the first damaged step, so
rerunning recomputes exactly what was lost.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Set, Tuple

import numpy as np
import pandas as pd
import torch

from . import manifest as _manifest
from .runlock import RunLock, RunLockedError

__all__ = ["RunStore", "RunStoreError", "FORMAT", "FORMAT_VERSION", "atomic_write_bytes", "environment_record"]

FORMAT = "lazyrich-run"
FORMAT_VERSION = 1
_META_KEYS = ("format", "format_version")


class RunStoreError(RuntimeError):
    """A run directory is corrupt, foreign, or was created with a different configuration."""


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``);
    inside a run directory, then append the file's size and SHA-256 to its manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _manifest.record_file(path, data)


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _atomic_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _atomic_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def step_file(step: int) -> str:
    """File name ``step_00000100`` (8 digits) of a step."""
    return f"step_{int(step):08d}"


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------


def _git_commit() -> Optional[str]:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) >= 7 else None


def environment_record(seed: int, device: Optional[str] = None) -> Dict[str, Any]:
    """Versions (python, torch, numpy, pandas, lazyrich), git commit of the lazyrich checkout (``git rev-parse
    HEAD``, null when not a git checkout), seed, device, hostname, platform, creation time (ISO 8601, UTC)."""
    try:
        from lazyrich import __version__ as lr_version
    except Exception:  # pragma: no cover
        lr_version = None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lazyrich": lr_version,
        "git_commit": _git_commit(),
        "seed": int(seed),
        "device": str(device),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _normalize_config(config: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}.")
    try:
        return json.loads(json.dumps(config, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"config must be JSON-serializable (str, int, float, bool, None, lists and dicts): {e}; "
            "convert tensors/paths/objects to plain values first."
        ) from None


def _diff_keys(a: Dict[str, Any], b: Dict[str, Any], prefix: str = "") -> list:
    out = []
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            out.append(prefix + k)
        elif isinstance(a[k], dict) and isinstance(b[k], dict):
            out.extend(_diff_keys(a[k], b[k], prefix + k + "."))
        elif a[k] != b[k]:
            out.append(prefix + k)
    return out


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


class RunStore:
    """Create or resume a run directory.

    Parameters
    ----------
    run_dir : str or Path
        Created if missing. An existing directory must be empty or hold a run with the same config.
    config : dict
        Fully resolved, JSON-serializable configuration. Stored as ``config.json`` together with
        ``"format": "lazyrich-run"``, ``"format_version": 1`` and ``"experiment"`` (default ``"custom"``).
    seed : int
        Recorded in ``env.json``; resuming with another seed is an error.
    device : str, optional
        Recorded in ``env.json`` (default: ``"cuda"`` if available else ``"cpu"``).

    Raises
    ------
    RunStoreError
        ``config.json`` missing in a non-empty directory, unreadable, of another format/version, or different
        from ``config``; or a different seed.
    """

    def __init__(self, run_dir, config: Dict[str, Any], *, seed: int, device: Optional[str] = None):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
        self.path = Path(run_dir)
        cfg = _normalize_config(config)
        for k in _META_KEYS:
            cfg.pop(k, None)
        cfg.setdefault("experiment", "custom")
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **cfg}
        if self.path.exists() and not self.path.is_dir():
            raise RunStoreError(f"{self.path} exists and is not a directory; choose another run directory.")
        cfg_path = self.path / "config.json"
        if not cfg_path.exists() and self.path.is_dir() and any(
            p for p in self.path.iterdir() if not p.name.startswith(".")
        ):
            raise RunStoreError(
                f"{self.path} is not empty and has no config.json, so it is not a lazyrich run; "
                "choose an empty or new directory."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock: Optional[RunLock] = RunLock(self.path)
        except RunLockedError as e:
            raise RunStoreError(str(e)) from None
        self._resume_limit: Optional[int] = None
        self.repairs: list = []  # files set aside as damaged when this store was opened
        self._metrics: Optional[pd.DataFrame] = None
        self._index: Optional[Dict[Tuple[Optional[str], int], str]] = None
        try:
            self._open(cfg, full, int(seed), device)
        except BaseException:
            self.close()
            raise
        self.seed = int(seed)

    def _open(self, cfg: Dict[str, Any], full: Dict[str, Any], seed: int, device: Optional[str]) -> None:
        cfg_path = self.path / "config.json"
        if cfg_path.exists():
            stored = self._read_json(cfg_path, "config.json")
            if not isinstance(stored, dict) or stored.get("format") != FORMAT:
                raise RunStoreError(
                    f"{self.path} is not a lazyrich run directory (config.json has no \"format\": \"{FORMAT}\"); "
                    "choose an empty or new directory."
                )
            if stored.get("format_version") != FORMAT_VERSION:
                raise RunStoreError(
                    f"{self.path} was written with run format version {stored.get('format_version')} but this "
                    f"lazyrich reads version {FORMAT_VERSION}; use a new run directory."
                )
            diff = _diff_keys({k: v for k, v in stored.items() if k not in _META_KEYS}, cfg)
            if diff:
                raise RunStoreError(
                    f"{self.path} holds a run with a different config (keys {diff} differ); rerun with the "
                    "original config to resume, or choose a new run directory."
                )
            env = self._read_json(self.path / "env.json", "env.json") if (self.path / "env.json").exists() else None
            if isinstance(env, dict) and env.get("seed") is not None and int(env["seed"]) != int(seed):
                raise RunStoreError(
                    f"{self.path} was run with seed {env['seed']} but seed {seed} was requested; use the same seed "
                    "to resume, or choose a new run directory."
                )
            self.config = stored
            self.resumed = True
            self._remove_temporaries()
            self._repair()
            if env is None:
                _atomic_json(self.path / "env.json", environment_record(int(seed), device))
            else:
                env.setdefault("resumes", []).append(
                    {
                        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                        "git_commit": _git_commit(),
                        "hostname": socket.gethostname(),
                    }
                )
                _atomic_json(self.path / "env.json", env)
        else:
            (self.path / _manifest.MANIFEST).touch()  # first: every file from here on is recorded
            _atomic_json(self.path / "env.json", environment_record(int(seed), device))
            _atomic_json(cfg_path, full)  # config last: its presence marks an initialized run
            self.config = full
            self.resumed = False

    # ------------------------------------------------------------------ lock
    def close(self) -> None:
        """Release the run directory's lock (also done when the store is garbage collected or the process ends)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ damage on resume
    def _remove_temporaries(self) -> None:
        """Delete ``.<name>.*.tmp`` files left by a writer killed mid-write (we hold the lock, so it is dead)."""
        for p in self.path.rglob(".*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass

    def _set_aside(self, rel: str) -> str:
        """Rename ``rel`` to ``rel.damaged`` (``.damaged.1``, ... if taken) and record the removal."""
        src = self.path / rel
        dst = src.with_name(src.name + ".damaged")
        k = 1
        while dst.exists():
            dst = src.with_name(f"{src.name}.damaged.{k}")
            k += 1
        to = None
        if src.exists():
            os.replace(src, dst)
            to = dst.relative_to(self.path).as_posix()
        _manifest.record_removed(self.path, rel, to)
        return to or "(missing)"

    def _repair(self) -> None:
        """Verify every file of the run (checksums); set damaged ones aside and arrange their recomputation.

        A damaged checkpoint is only set aside (training resumes from the last intact one). A damaged per-step
        file (kernel, per-layer kernel, activation patterns, conserved quantities) of step ``s`` drops the
        metrics row of ``s`` and limits the resume to checkpoints ``<= s``. A damaged ``metrics.csv``,
        ``kernels/index.csv``, ``tracker_init.pt`` or probe file drops every metrics row (all steps are recorded
        again, from step 0). Any other damaged file (a results table, a figure) is set aside, so the experiment
        recomputes it. ``config.json`` and ``env.json`` were validated/rewritten by the caller.
        """
        legacy = not (self.path / _manifest.MANIFEST).exists()
        res = _manifest.check_run(self.path, checksums=True, skip=("config.json", "env.json"))
        if legacy:
            (self.path / _manifest.MANIFEST).touch()
            warnings.warn(
                f"{self.path} has no manifest (written by an older lazyrich): its existing files are checked for "
                "completeness only (sizes, headers, zip CRCs, NaN); files written from now on are recorded with "
                "checksums.", RuntimeWarning, stacklevel=4,
            )
        if res.ok:
            return
        limit: Optional[int] = None
        drop_steps: Set[int] = set()
        restart = False
        for d in res.damaged:
            rel = d.path
            to = self._set_aside(rel)
            self.repairs.append((rel, d.reason, to))
            s = _manifest.step_of(rel)
            top = rel.split("/")[0]
            if top == "checkpoints":
                continue
            if rel in ("metrics.csv", "kernels/index.csv", "tracker_init.pt") or top == "probe":
                restart = True
            elif s is not None:
                drop_steps.add(s)
                limit = s if limit is None else min(limit, s)
        if restart:
            limit = 0
        if restart and (self.path / "metrics.csv").exists():
            self._rewrite_metrics(self._read_metrics_file().iloc[0:0])
        elif drop_steps and (self.path / "metrics.csv").exists():
            df = self._read_metrics_file()
            self._rewrite_metrics(df[~df["step"].isin(sorted(drop_steps))])
        if (restart or drop_steps) and (self.path / "kernels" / "index.csv").exists():
            idx = self._load_index()
            for key in [k for k in idx if restart or k[1] in drop_steps]:
                del idx[key]
            self._write_index()
        self._metrics = None
        self._resume_limit = limit
        listed = "; ".join(f"{rel} {why} -> {to}" for rel, why, to in self.repairs)
        then = "the run recomputes what they held"
        if limit is not None or any(rel.startswith("checkpoints/") for rel, _, _ in self.repairs):
            intact = [c for c in self.checkpoint_steps() if limit is None or c <= limit]
            where = f"the last intact checkpoint, step {intact[-1]}" if intact else "step 0 (no intact checkpoint)"
            then = f"training resumes from {where}, and the run recomputes what they held"
        warnings.warn(f"{self.path}: set aside {len(self.repairs)} damaged file(s) ({listed}); {then}.",
                      RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ helpers
    def _read_json(self, path: Path, what: str):
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            raise RunStoreError(
                f"{what} in {self.path} is unreadable or corrupt ({e.__class__.__name__}); "
                "delete the directory or choose a new one."
            ) from None

    @property
    def figures_dir(self) -> Path:
        """``run_dir/figures`` (created on access)."""
        d = self.path / "figures"
        d.mkdir(exist_ok=True)
        return d

    @property
    def env(self) -> Dict[str, Any]:
        return self._read_json(self.path / "env.json", "env.json")

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> pd.DataFrame:
        """The metrics table (a copy); empty with a ``step`` column when nothing was recorded."""
        return self._load_metrics().copy()

    def _read_metrics_file(self) -> pd.DataFrame:
        p = self.path / "metrics.csv"
        why = _manifest.csv_problem(p)
        if why is None:
            try:
                df = pd.read_csv(p)
            except Exception as e:
                why = f"is corrupt ({e.__class__.__name__})"
            else:
                if "step" not in df.columns:
                    why = "has no 'step' column"
        if why is not None:
            raise RunStoreError(
                f"metrics.csv in {self.path} {why}; rerun on this directory to set it aside and recompute the "
                "metrics, or choose a new run directory."
            )
        return df

    def _load_metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            if (self.path / "metrics.csv").exists():
                df = self._read_metrics_file()
            else:
                df = pd.DataFrame({"step": pd.Series([], dtype="int64")})
            self._metrics = df
        return self._metrics

    def _rewrite_metrics(self, df: pd.DataFrame) -> None:
        cols = ["step"] + [c for c in df.columns if c != "step"]
        df = df[cols].sort_values("step", kind="stable").reset_index(drop=True)
        df["step"] = df["step"].astype("int64")
        _atomic_csv(self.path / "metrics.csv", df)
        self._metrics = df

    def append_metrics(self, row: Dict[str, Any]) -> None:
        """Add (or replace) the row of ``row["step"]`` and rewrite ``metrics.csv`` atomically."""
        if "step" not in row:
            raise ValueError("A metrics row needs a 'step' entry.")
        row = dict(row)
        step = int(row.pop("step"))
        df = self._load_metrics()
        df = df[df["step"] != step]
        new = pd.DataFrame([{"step": step, **row}])
        df = pd.concat([df, new], ignore_index=True) if len(df) else new
        self._rewrite_metrics(df)

    def completed_steps(self) -> Set[int]:
        """Steps whose metrics row exists (the row is written last, so the step is complete)."""
        return set(int(s) for s in self._load_metrics()["step"].tolist())

    # ------------------------------------------------------------------ kernels
    def _load_index(self) -> Dict[Tuple[Optional[str], int], str]:
        if self._index is None:
            self._index = {}
            p = self.path / "kernels" / "index.csv"
            if p.exists():
                try:
                    df = pd.read_csv(p)
                except Exception:
                    raise RunStoreError(
                        f"kernels/index.csv in {self.path} is corrupt; delete it (kernels will be recomputed) or "
                        "use a new run directory."
                    ) from None
                for r in df.itertuples(index=False):
                    self._index[(None, int(r.step))] = str(r.file)
        return self._index

    def _write_index(self) -> None:
        rows = sorted((s, f) for (l, s), f in self._load_index().items() if l is None)
        _atomic_csv(self.path / "kernels" / "index.csv", pd.DataFrame(rows, columns=["step", "file"]))

    def save_kernel(self, step: int, K, layer: Optional[str] = None) -> Path:
        """Store a kernel as float32 ``.npy``; the total kernel is then listed in ``kernels/index.csv``."""
        if isinstance(K, torch.Tensor):
            K = K.detach().to("cpu", torch.float32).numpy()
        K = np.ascontiguousarray(np.asarray(K, dtype=np.float32))
        if layer is None:
            rel = Path("kernels") / "total" / f"{step_file(step)}.npy"
        else:
            if "/" in layer or layer in ("", ".", ".."):
                raise ValueError(f"Invalid layer name {layer!r} for a kernel file.")
            rel = Path("kernels") / "layers" / layer / f"{step_file(step)}.npy"
        _atomic_npy(self.path / rel, K)
        if layer is None:
            self._load_index()[(None, int(step))] = rel.as_posix()
            self._write_index()
        return self.path / rel

    def kernel_steps(self) -> list:
        return sorted(s for (l, s) in self._load_index() if l is None)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, step: int, state: Dict[str, Any]) -> Path:
        """Save ``state`` (must contain tensors/primitives only) as ``checkpoints/step_XXXXXXXX.pt``."""
        state = dict(state)
        state["step"] = int(step)
        p = self.path / "checkpoints" / f"{step_file(step)}.pt"
        _atomic_torch(p, state)
        if self._resume_limit is not None and int(step) >= self._resume_limit:
            self._resume_limit = None  # training has recomputed past the first damaged step
        return p

    def checkpoint_steps(self) -> list:
        d = self.path / "checkpoints"
        if not d.is_dir():
            return []
        out = []
        for f in d.glob("step_*.pt"):
            try:
                out.append(int(f.stem[5:]))
            except ValueError:
                continue
        return sorted(out)

    def _read_checkpoint(self, step: int) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """``(state, None)``, or ``(None, why)`` when the file differs from its manifest record or is corrupt."""
        p = self.path / "checkpoints" / f"{step_file(step)}.pt"
        rec = (_manifest.read_manifest(self.path)[0] or {}).get(p.relative_to(self.path).as_posix())
        raw = p.read_bytes()
        if rec is not None and len(raw) != rec["size"]:
            what = "truncated" if len(raw) < rec["size"] else "altered"
            return None, f"is {what}: {len(raw)} bytes where the manifest records {rec['size']}"
        if rec is not None and hashlib.sha256(raw).hexdigest() != rec["sha256"]:
            return None, "does not match its SHA-256 in the manifest (its contents were altered)"
        try:
            return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True), None
        except Exception as e:
            return None, f"is corrupt ({e.__class__.__name__})"

    def load_checkpoint(self, step: int) -> Dict[str, Any]:
        """The checkpoint of ``step``, verified against its manifest record (size and SHA-256) first.

        Raises :class:`RunStoreError` (naming the file) when it is damaged, ``FileNotFoundError`` when absent.
        """
        p = self.path / "checkpoints" / f"{step_file(step)}.pt"
        if not p.exists():
            raise FileNotFoundError(f"No checkpoint for step {step} in {self.path}; available: {self.checkpoint_steps()}.")
        state, why = self._read_checkpoint(step)
        if why is not None:
            raise RunStoreError(
                f"Checkpoint {p} {why}; rerun on this directory to set it aside and resume from an earlier checkpoint."
            )
        return state

    def latest_checkpoint(self) -> Optional[Tuple[int, Dict[str, Any]]]:
        """``(step, state)`` of the newest intact checkpoint, or None.

        A damaged one is set aside (``<name>.damaged``) with a warning and the next older one is tried. After a
        resume that found damaged per-step files, only checkpoints up to the first damaged step count (so that
        step is recomputed).
        """
        for s in reversed(self.checkpoint_steps()):
            if self._resume_limit is not None and s > self._resume_limit:
                continue
            state, why = self._read_checkpoint(s)
            if why is None:
                return s, state
            to = self._set_aside(f"checkpoints/{step_file(s)}.pt")
            warnings.warn(f"Checkpoint {self.path / 'checkpoints' / (step_file(s) + '.pt')} {why}: set aside as {to}; "
                          "resuming from the previous intact checkpoint.", RuntimeWarning, stacklevel=2)
        return None

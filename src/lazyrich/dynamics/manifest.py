"""The manifest of a run directory: every finished file's size and SHA-256, and the check of a run against it.

``run_dir/manifest.jsonl`` is an append-only journal, one JSON record per line::

    {"path": "kernels/total/step_00000100.npy", "size": 262272, "sha256": "9f86d0..."}
    {"path": "checkpoints/step_00000200.pt", "removed": true, "to": "checkpoints/step_00000200.pt.damaged"}

A record is appended by :func:`lazyrich.dynamics.store.atomic_write_bytes` right after the file has been moved
into place (``os.replace``), with the checksum of the bytes it wrote, so a record never describes a file that
is not complete; the last record of a path wins. Appending one short line with one ``write`` on an
``O_APPEND`` descriptor keeps the cost per file constant (rewriting a ``manifest.json`` for every file would
cost O(files^2) over a run) and is safe against two appenders. A line cut short by ``kill -9`` or a power loss
cannot parse and is ignored: the file it described is then *unrecorded*, and unrecorded files (also every file
of a run written before the manifest existed, a "legacy" run) get the completeness checks below instead of the
checksum. Files that are rewritten whole (``metrics.csv``, ``kernels/index.csv``, ``switching.csv``) get a new
record after each rewrite; nothing in a run directory is appended to except this journal.

Checks (:func:`check_run`):

* always (cheap, what :func:`lazyrich.dynamics.load_run` does): every recorded file is present and has its
  recorded size; every kernel listed in ``kernels/index.csv`` is present; unrecorded files are complete
  (``.npy``: header and file size agree; ``.pt``/``.npz``: the zip directory at the end is readable;
  ``.csv``: the last row is complete and every row has the header's number of fields; ``.json``: parses);
* with ``checksums=True`` (``lazyrich check``, ``load_run(verify=True)``, resuming a run): the SHA-256 of every
  recorded file, the CRC-32 of every member of unrecorded zip files, and no NaN/inf in any float ``.npy``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "MANIFEST",
    "Damage",
    "RunCheck",
    "check_run",
    "find_run_root",
    "read_manifest",
    "record_file",
    "record_removed",
    "sha256_file",
    "step_of",
]

MANIFEST = "manifest.jsonl"
_CHUNK = 1 << 20
_STEP_RE = re.compile(r"step_(\d{8})\.")
# never listed: the journal itself, the lock file, temporary and set-aside files (see RunStore)
_SKIP_SUFFIXES = (".tmp", ".damaged")


# --------------------------------------------------------------------------------------------
# writing records
# --------------------------------------------------------------------------------------------


def find_run_root(directory: Path) -> Optional[Path]:
    """The nearest directory at or above ``directory`` holding a ``manifest.jsonl`` (None if there is none)."""
    d = Path(directory).absolute()
    for p in (d, *d.parents):
        if (p / MANIFEST).is_file():
            return p
    return None


def _append(root: Path, record: dict) -> None:
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(root / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            # a line cut short by a crash: end it, so that it stays one unreadable line of its own
            with open(root / MANIFEST, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)


def record_file(path: Path, data: bytes) -> None:
    """Append the record (relative path, size, SHA-256 of ``data``) of the just-written ``path`` to the
    manifest of the run directory it lies in; a no-op outside a run directory."""
    path = Path(path).absolute()
    root = find_run_root(path.parent)
    if root is None:
        return
    rel = path.relative_to(root).as_posix()
    _append(root, {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def record_removed(root: Path, rel: str, to: Optional[str] = None) -> None:
    """Append a record saying that ``rel`` was removed from the run (renamed to ``to``, when given)."""
    rec = {"path": rel, "removed": True}
    if to is not None:
        rec["to"] = to
    _append(Path(root), rec)


def read_manifest(root: Path) -> Tuple[Optional[Dict[str, dict]], int]:
    """``(records, n_unreadable)``: the current record of every path (last one wins, removed paths dropped),
    or ``None`` when the run has no manifest (legacy), and the number of unreadable (cut-short) lines."""
    p = Path(root) / MANIFEST
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None, 0
    out: Dict[str, dict] = {}
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            rel = rec["path"]
            if rec.get("removed"):
                out.pop(rel, None)
            else:
                out[rel] = {"size": int(rec["size"]), "sha256": str(rec["sha256"])}
        except (ValueError, KeyError, TypeError):
            bad += 1
    return out, bad


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def step_of(rel: str) -> Optional[int]:
    """The step in a per-step file name (``.../step_00000100.npy`` -> 100), else None."""
    m = _STEP_RE.search(Path(rel).name)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# completeness checks of single files
# --------------------------------------------------------------------------------------------


def _npy_header(path: Path):
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        return shape, dtype, fh.tell()


def _npy_problem(path: Path, finite: bool) -> Optional[str]:
    try:
        shape, dtype, offset = _npy_header(path)
    except Exception:
        return "is not a readable .npy file (its header is cut short or damaged)"
    want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = path.stat().st_size
    if have != want:
        return f"is truncated or padded: {have} bytes where its header {shape} {dtype} needs {want}"
    if finite and dtype.kind in "fc":
        return _nonfinite_problem(path)
    return None


def _nonfinite_problem(path: Path) -> Optional[str]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:
        return "is not a readable .npy file"
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None
    flat = arr.reshape(-1)
    step = max(1, _CHUNK * 8 // arr.dtype.itemsize)
    for i in range(0, flat.size, step):
        block = np.asarray(flat[i : i + step])
        if not np.isfinite(block).all():
            return f"holds {'NaN' if np.isnan(block).any() else 'infinite'} values"
    return None


def _zip_problem(path: Path, full: bool) -> Optional[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            if full and zf.testzip() is not None:
                return "fails its internal CRC check (damaged)"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is truncated or damaged (its zip directory cannot be read)"
    return None


def csv_problem(path: Path) -> Optional[str]:
    """Why a CSV file is incomplete (no final newline, a row with fewer/more fields than the header), or None."""
    raw = Path(path).read_bytes()
    if not raw:
        return "is empty"
    if not raw.endswith(b"\n"):
        return "ends in the middle of a row (truncated)"
    try:
        rows = list(csv.reader(io.StringIO(raw.decode())))
    except (UnicodeDecodeError, csv.Error):
        return "is not readable CSV"
    width = len(rows[0])
    for i, r in enumerate(rows[1:], start=2):
        if r and len(r) != width:
            return f"has {len(r)} fields on line {i} where the header has {width} (truncated or altered)"
    return None


def _json_problem(path: Path) -> Optional[str]:
    try:
        json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError):
        return "is not complete JSON (truncated or damaged)"
    return None


def completeness_problem(path: Path, *, full: bool) -> Optional[str]:
    """Why a file without a manifest record is incomplete or damaged, or None (see the module docstring)."""
    suffix = Path(path).suffix
    if suffix == ".npy":
        return _npy_problem(path, finite=full)
    if suffix in (".pt", ".npz"):
        return _zip_problem(path, full)
    if suffix == ".csv":
        return csv_problem(path)
    if suffix == ".json":
        return _json_problem(path)
    return None


# --------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------


@dataclass
class Damage:
    """One damaged file: ``path`` relative to the run directory, ``reason`` a phrase ("is missing", ...)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


@dataclass
class RunCheck:
    """The result of :func:`check_run`."""

    root: Path
    legacy: bool
    checksums: bool
    n_files: int = 0
    damaged: List[Damage] = field(default_factory=list)
    unrecorded: List[str] = field(default_factory=list)
    set_aside: List[str] = field(default_factory=list)
    unreadable_records: int = 0

    @property
    def ok(self) -> bool:
        return not self.damaged

    def sentence(self) -> str:
        """One sentence naming the (first) damaged file and the fix."""
        d = self.damaged[0]
        more = f" (and {len(self.damaged) - 1} more damaged files)" if len(self.damaged) > 1 else ""
        return (
            f"{d.path} in run directory {self.root} {d.reason}{more}; rerun the run on this directory (the same "
            f"`lazyrich run` command or script) to set the damaged files aside and recompute them, or run "
            f"`lazyrich check {self.root}` to list all damage."
        )


def _on_disk(root: Path) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or f == MANIFEST or f.endswith(_SKIP_SUFFIXES):
                continue
            out.append(Path(dirpath, f).relative_to(root).as_posix())
    return out


def check_run(root, *, checksums: bool = True, skip: Tuple[str, ...] = ()) -> RunCheck:
    """Check a run directory against its manifest (see the module docstring for what is checked when).

    ``checksums=False`` is the cheap check (presence, sizes, completeness of unrecorded files);
    ``checksums=True`` adds the SHA-256 of every recorded file, zip CRCs and NaN/inf scans of float ``.npy``.
    Paths in ``skip`` are not examined. Never raises on damage: the result lists it.
    """
    root = Path(root)
    records, bad = read_manifest(root)
    res = RunCheck(root=root, legacy=records is None, checksums=checksums, unreadable_records=bad)
    records = records or {}
    disk = set(_on_disk(root))
    res.set_aside = sorted(
        Path(dp, f).relative_to(root).as_posix()
        for dp, _, fs in os.walk(root) for f in fs if f.endswith(".damaged")
    )
    for rel, rec in sorted(records.items()):
        if rel in skip:
            continue
        res.n_files += 1
        p = root / rel
        if rel not in disk:
            res.damaged.append(Damage(rel, f"is missing (the manifest records {rec['size']} bytes)"))
            continue
        size = p.stat().st_size
        if size != rec["size"]:
            what = "truncated" if size < rec["size"] else "altered"
            res.damaged.append(Damage(rel, f"is {what}: {size} bytes where the manifest records {rec['size']}"))
            continue
        if checksums:
            if sha256_file(p) != rec["sha256"]:
                res.damaged.append(Damage(rel, "does not match its SHA-256 in the manifest (its contents were altered)"))
                continue
            if p.suffix == ".npy":
                why = _nonfinite_problem(p)
                if why:
                    res.damaged.append(Damage(rel, why))
    for rel in sorted(disk - set(records)):
        if rel in skip:
            continue
        res.n_files += 1
        res.unrecorded.append(rel)
        why = completeness_problem(root / rel, full=checksums)
        if why:
            res.damaged.append(Damage(rel, why))
    # kernels listed in the index must exist (a deleted kernel must not just drop out of the trajectory)
    idx = root / "kernels" / "index.csv"
    if "kernels/index.csv" in disk and not any(d.path == "kernels/index.csv" for d in res.damaged):
        try:
            import pandas as pd

            files = [str(f) for f in pd.read_csv(idx)["file"]]
        except Exception:
            files = []
            res.damaged.append(Damage("kernels/index.csv", "is not a readable kernel index"))
        named = {d.path for d in res.damaged}
        for f in files:
            if f not in disk and f not in named:
                res.damaged.append(Damage(f, "is missing (listed in kernels/index.csv)"))
    return res

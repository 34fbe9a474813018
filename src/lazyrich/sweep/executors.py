"""Where the cells of a sweep run: ``local`` (a process pool on this machine) or ``ray`` (Ray tasks).

Both take the cell specs of :func:`lazyrich.sweep.cells.run_cell` and yield its result dicts as cells
finish (in completion order).  Neither schedules anything itself: ``local`` is
:class:`concurrent.futures.ProcessPoolExecutor` (spawn context, one worker per core by default, each
limited to its share of the cores' threads), ``ray`` submits one ``ray.remote`` task per cell (1 CPU
each) to the cluster at ``address`` or to a local one it starts with ``num_cpus=workers``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Dict, Iterator, List, Optional

__all__ = ["EXECUTORS", "default_workers", "threads_per_worker", "run_local", "run_ray", "execute", "check_address"]

EXECUTORS = ("local", "ray")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per core available to this process."""
    return max(1, _cores())


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores (at least one thread)."""
    return max(1, _cores() // max(1, workers))


def _check_workers(workers: Optional[int]) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}; e.g. --workers 2.")
    return workers


def _init_local_worker(threads: int) -> None:
    from lazyrich.sweep.cells import exit_with_parent, limit_threads

    limit_threads(threads)
    exit_with_parent()


def run_local(specs: List[Dict[str, Any]], workers: Optional[int] = None) -> Iterator[Dict[str, Any]]:
    """Run the cells in ``workers`` spawned processes; yield each cell's result as it finishes.

    A cell's own exception is recorded by :func:`~lazyrich.sweep.cells.run_cell`; a worker process that dies
    (killed, out of memory) breaks the pool, and every cell not yet finished is then reported failed with
    that reason (a rerun retries them).
    """
    from lazyrich.sweep.cells import run_cell

    workers = _check_workers(workers)
    threads = threads_per_worker(workers)
    for s in specs:
        s.setdefault("threads", threads)
    if not specs:
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(specs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_local_worker, initargs=(threads,))
    try:
        futures = {pool.submit(run_cell, s): s for s in specs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    yield f.result()
                except BrokenProcessPool:
                    yield {"hash": futures[f]["hash"], "ok": False, "seconds": 0.0, "rows": None,
                           "error": "a worker process died (killed or out of memory); rerun the sweep to retry this cell"}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def check_address(address: str) -> None:
    """One sentence when a ``host:port`` Ray address cannot be reached (before Ray's own long retries)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is not of the form host:port; pass e.g. --address 10.0.0.5:6379.")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
                              f"`ray start --head` there, or drop --address to start a local one.") from None


def run_ray(specs: List[Dict[str, Any]], workers: Optional[int] = None,
            address: Optional[str] = None) -> Iterator[Dict[str, Any]]:
    """Run each cell as a Ray task (1 CPU); yield each result as it finishes.

    Uses the Ray session already initialized in this process if any; otherwise connects to ``address``
    or starts a local cluster with ``num_cpus=workers`` (default: one per core), shut down at the end.
    With ``workers`` given, at most that many cells are in flight at once.
    """
    try:
        import ray
    except ImportError:
        raise ImportError("the ray executor needs Ray; install it with pip install 'lazyrich[ray]' "
                          "or use --executor local.") from None
    from lazyrich.sweep.cells import run_cell

    if workers is not None:
        _check_workers(workers)
    if address:
        check_address(address)
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or default_workers(), include_dashboard=False, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        for s in specs:
            s.setdefault("threads", 1)
        queue = list(specs)
        cap = workers or len(queue)
        inflight: Dict[Any, Dict[str, Any]] = {}
        while queue or inflight:
            while queue and len(inflight) < cap:
                s = queue.pop(0)
                inflight[task.remote(s)] = s
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                s = inflight.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # a worker that died: ray.exceptions.WorkerCrashedError etc.
                    yield {"hash": s["hash"], "ok": False, "seconds": 0.0, "rows": None,
                           "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    finally:
        if started:
            ray.shutdown()


def execute(specs: List[Dict[str, Any]], executor: str = "local", workers: Optional[int] = None,
            address: Optional[str] = None) -> Iterator[Dict[str, Any]]:
    """Dispatch to :func:`run_local` or :func:`run_ray`."""
    if executor == "local":
        if address:
            raise ValueError("--address applies to the ray executor; drop it or pass --executor ray.")
        return run_local(specs, workers)
    if executor == "ray":
        return run_ray(specs, workers, address)
    raise ValueError(f"unknown executor {executor!r}; use --executor local or --executor ray.")

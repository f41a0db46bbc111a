"""Executors (a process pool, or Ray tasks) and the append-only run store that makes a sweep resumable.

Only the driver writes: workers return records, the driver appends each one to ``runs.jsonl`` (one line, flushed
and fsynced) as it arrives. A kill therefore loses at most the runs in flight, and the same command again runs only
what is missing. A worker that dies (the out-of-memory killer's SIGKILL) costs only the run it held: that run is
recorded failed with the cause, the pool is rebuilt, and the runs in flight on the healthy workers run again.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnreg.ablation import RunTask, run_task
from rnnreg.allocator import keep_freed_memory
from rnnreg.cores import available_cores
from rnnreg.data import Corpus
from rnnreg.fsio import append_line, atomic_write_text

EXECUTORS = ("process", "ray")
MANIFEST = "ablate.json"
RUNS = "runs.jsonl"
MAX_BREAKS = 3  # worker deaths in a row (no run finishing between them) before a sweep gives up on the rest
WATCH_S = 1.0  # how often the driver checks its workers for one that died (the pool itself can miss it, see below)
RAY_RETRIES = 1  # Ray reruns a task once when its worker process dies; a second death records the run failed


def check_executor(executor: str, address: str | None) -> None:
    """Refuse an unknown executor, an address without Ray, or Ray that is not installed; before anything runs."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    if address and executor != "ray":
        raise ValueError(f"address {address!r} names a Ray cluster; it needs executor='ray'")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("executor 'ray' needs Ray: pip install 'rnnreg[ray]'")


def split_cores(
    workers: int | None, runs: int, cores: int | None = None, threads: int | None = None
) -> tuple[int, int]:
    """``(workers, torch threads per worker)`` with workers x threads <= cores, unless ``threads`` is given.

    Small RNNs scale better over processes than over threads (measured on 2 cores: two one-thread workers finish a
    sweep faster than one two-thread worker), so the default is one worker per core, and threads only take up cores
    that would otherwise idle.
    """
    cores = cores or available_cores()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be >= 1 (got {workers!r}); e.g. workers={cores}, one per core")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be >= 1 (got {threads!r}); e.g. threads=1")
    n = min(workers or cores, max(runs, 1))
    return n, threads or max(1, cores // n)


# ---------------------------------------------------------------------------------------------------------------
# The store


@dataclass
class StoreState:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # by run key; a later line wins
    problems: list[str] = field(default_factory=list)  # corrupt lines, reported and ignored


class RunStore:
    """``runs.jsonl`` in ``folder``: one JSON record per finished run, appended by the driver alone."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RUNS

    def load(self) -> StoreState:
        state = StoreState()
        if not self.path.exists():
            return state
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = record["key"]
            except (ValueError, KeyError, TypeError) as e:
                where = "last line" if i >= len(lines) - 1 else f"line {i}"
                state.problems.append(f"{self.path}: {where} is not a complete record ({type(e).__name__}); ignored")
                continue
            state.records[key] = record
        return state

    def append(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, allow_nan=True)
        # A SIGKILL can tear a long write between pages; start on a fresh line so the torn one stays alone (and is
        # ignored by load) instead of swallowing this record.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                append_line(self.path, "")  # ends the torn line
        append_line(self.path, line)


def refuse_other_data(folder: Path, manifest: dict[str, Any], *, force: bool) -> None:
    """Refuse an output folder that holds runs of other data (unless ``force``). Reads only."""
    path = Path(folder) / MANIFEST
    if path.exists() and not force:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("fingerprint") != manifest["fingerprint"]:
            raise ValueError(
                f"{folder} holds runs of other data ({old.get('data', '?')}); this command's data: "
                f"{manifest['data']}. Use another output folder, or force=True to add these runs beside them "
                "(nothing is deleted)"
            )


def check_manifest(folder: Path, manifest: dict[str, Any], *, force: bool) -> None:
    """:func:`refuse_other_data`, then write this sweep's manifest (call it holding the folder's lock)."""
    refuse_other_data(folder, manifest, force=force)
    path = Path(folder) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Executors: each yields ("started", task), ("requeued", task) and ("done", record) events; the driver alone writes


Event = tuple[str, Any]
RunFn = Callable[[RunTask, Corpus], dict[str, Any]]

_WORKER_CORPUS: Corpus | None = None
_WORKER_RUN: RunFn | None = None
_WORKER_STARTS: Any = None  # a SimpleQueue: (key, pid) as each task starts, so the driver knows who held what


def _init_worker(corpus: Corpus, threads: int, run_fn: RunFn | None = None, starts: Any = None) -> None:
    global _WORKER_CORPUS, _WORKER_RUN, _WORKER_STARTS
    import torch

    keep_freed_memory()
    torch.set_num_threads(threads)
    _WORKER_CORPUS = corpus
    _WORKER_RUN = run_fn
    _WORKER_STARTS = starts


def _run_in_worker(task: RunTask) -> dict[str, Any]:
    if _WORKER_CORPUS is None:
        raise RuntimeError("worker was not initialised with the corpus")
    if _WORKER_STARTS is not None:  # one small pipe write, done before the run: a death mid-run names its run
        _WORKER_STARTS.put((task.key, os.getpid()))
    return (_WORKER_RUN or run_task)(task, _WORKER_CORPUS)


def run_local(tasks: Sequence[RunTask], corpus: Corpus, workers: int, threads: int) -> Iterator[Event]:
    """One process (``workers == 1``) or a pool of fresh (spawned) processes, ``threads`` torch threads each.

    A worker that dies mid-run breaks the pool: its run is recorded failed with the cause (the signal or exit code),
    the runs in flight on the other workers are requeued, and a fresh pool goes on with them and the rest. After
    :data:`MAX_BREAKS` deaths in a row with no run finishing between them, the rest is recorded failed instead.
    """
    run_fn = run_task  # looked up now, so that a stand-in set on this module reaches the workers too
    if workers == 1:
        _init_worker(corpus, threads, run_fn)
        for task in tasks:
            yield "started", task
            yield "done", _run_in_worker(task)
        return
    # spawn, not fork: a forked child inherits torch's OpenMP state mid-flight, which can deadlock.
    ctx = multiprocessing.get_context("spawn")
    queue = deque(tasks)
    breaks = 0  # pool breaks since a run last finished
    while queue:
        starts = ctx.SimpleQueue()  # a fresh one per pool: a worker killed mid-write cannot block the next pool
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(corpus, threads, run_fn, starts)
        )
        running: dict[Future[dict[str, Any]], RunTask] = {}
        holder: dict[str, int] = {}  # run key -> pid of the worker that started it
        broken = False
        try:
            while (queue or running) and not broken:
                while queue and len(running) < workers:  # submit as slots free up, so "running" is honest
                    try:
                        future = pool.submit(_run_in_worker, queue[0])
                    except BrokenProcessPool:  # a worker died while idle
                        broken = True
                        break
                    running[future] = task = queue.popleft()
                    yield "started", task
                if broken:
                    break
                done, _ = wait(running, timeout=WATCH_S, return_when=FIRST_COMPLETED)
                if not done and _any_dead(pool):
                    # The pool watches the workers it had when it last started waiting; one spawned after that
                    # (CPython 3.11) can die unnoticed while the others keep their runs. Stop them: now it notices.
                    broken = True
                    break
                for future in done:
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = True  # handled below, once the pool has stopped every worker
                        continue
                    task = running.pop(future)
                    breaks = 0
                    try:
                        record = future.result()
                    except (Exception, SystemExit) as e:  # raised in the worker outside run (an unpicklable result)
                        record = _crashed(task, f"worker crashed: {type(e).__name__}: {e}")
                    yield "done", record
                _drain(starts, holder)  # keeps the pipe from filling up on long sweeps
        except BaseException:
            # Interrupted (a signal, Ctrl-C, or the consumer stopped): the runs in flight are lost anyway, so stop their
            # processes now instead of waiting for them to finish.
            for process in list((getattr(pool, "_processes", None) or {}).values()):  # a private map pid -> Process
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        if not broken:
            pool.shutdown()
            starts.close()
            return
        # The pool broke: every worker is stopped (SIGTERM, by the pool or here). Whoever exited otherwise died.
        processes = dict(getattr(pool, "_processes", None) or {})  # a private map pid -> Process; read before shutdown
        for process in processes.values():
            if process.exitcode is None:
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(starts, holder)
        starts.close()
        deaths = {pid: cause for pid, p in processes.items() if (cause := _death(p.exitcode)) is not None}
        breaks += 1
        lost = list(running.values())
        again = [task for task in lost if holder.get(task.key) not in deaths]
        for task in lost:
            if task not in again:  # it killed its worker: not retried in this sweep, the next one retries it
                yield "done", _crashed(task, deaths[holder[task.key]])
        for task in again:
            yield "requeued", task
        queue.extendleft(reversed(again))
        if queue and breaks >= MAX_BREAKS:
            last = "; ".join(sorted(set(deaths.values()))) or "a worker stopped, cause unknown"
            reason = (
                f"not run: worker processes died {breaks} times in a row with no run finishing between ({last}); "
                "the same sweep again retries it"
            )
            while queue:
                yield "done", _crashed(queue.popleft(), reason)


def _any_dead(pool: ProcessPoolExecutor) -> bool:
    return any(p.exitcode is not None for p in list((getattr(pool, "_processes", None) or {}).values()))


def _drain(starts: Any, holder: dict[str, int]) -> None:
    while not starts.empty():
        key, pid = starts.get()
        holder[key] = pid


def _death(exitcode: int | None) -> str | None:
    """What ended a worker of a broken pool, or None for one still running or stopped by the pool (SIGTERM)."""
    if exitcode is None or exitcode == -signal.SIGTERM:
        return None
    if exitcode >= 0:
        return f"worker process exited with code {exitcode} mid-run"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "unknown signal"
    hint = " - out of memory? (the kernel's OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
    return f"worker process killed by signal {-exitcode} ({name}){hint}"


def _crashed(task: RunTask, cause: str) -> dict[str, Any]:
    return {
        "key": task.key,
        "variant": task.variant,
        "kind": task.kind,
        "seed": task.seed,
        "status": "failed",
        "error": cause,
    }


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address nothing listens on: Ray itself retries for minutes before it gives up."""
    if address == "auto" or "://" in address:
        return  # Ray finds the cluster itself ("auto"), or a Ray Client URL it connects to on its own
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be host:port of a Ray head node, e.g. 127.0.0.1:6379 (got {address!r})")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(
            f"no Ray cluster answers at address {address} ({e.strerror or e}); start one there with "
            "`ray start --head`, or leave address out (None) to run Ray locally"
        ) from None


def _ray_task(task: RunTask, corpus: Corpus, threads: int, run_fn: RunFn) -> dict[str, Any]:
    import torch

    keep_freed_memory()
    torch.set_num_threads(threads)
    return run_fn(task, corpus)


def run_ray(
    tasks: Sequence[RunTask], corpus: Corpus, workers: int, threads: int, address: str | None
) -> Iterator[Event]:
    """The same run function as Ray tasks (``threads`` CPUs each); results come back to the driver.

    Ray reruns a task whose worker process died (:data:`RAY_RETRIES` times); a run that dies again is recorded failed
    with Ray's reason, and the sweep goes on.
    """
    try:
        import ray
    except ImportError:
        raise ValueError("executor='ray' needs Ray: pip install 'rnnreg[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            _check_reachable(address)
        try:
            if address:
                ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
            else:  # a local instance on loopback only
                ray.init(
                    num_cpus=workers * threads,
                    log_to_driver=False,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    _node_ip_address="127.0.0.1",
                )
        except Exception as e:  # ConnectionError, or Ray's own errors for a bad address
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            first = str(e).splitlines()[0] if str(e) else ""
            raise ValueError(
                f"could not start or reach {where} ({type(e).__name__}: {first}); check address (host:port of "
                "`ray start --head`), or leave it out (None) to run Ray locally"
            ) from None
    pending: dict[Any, RunTask] = {}  # Ray object ref -> its task
    try:
        remote = ray.remote(num_cpus=threads, max_retries=RAY_RETRIES)(_ray_task)
        corpus_ref = ray.put(corpus)
        run_fn = run_task  # looked up now, so that a stand-in set on this module reaches the workers too
        for task in tasks:
            pending[remote.remote(task, corpus_ref, threads, run_fn)] = task
            yield "started", task
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(done[0])
            try:
                record = ray.get(done[0])
            except Exception as e:  # its worker died again after the retries (or Ray lost the object)
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                record = _crashed(task, f"worker crashed: {type(e).__name__}: {first}")
            yield "done", record
    finally:
        for ref in pending:  # interrupted: the runs in flight are lost anyway
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class SweepResult:
    records: dict[str, dict[str, Any]]  # every record of this plan's tasks that exists now, by key
    ran: int  # runs executed by this call
    reused: int  # runs found finished in the store
    failed: list[dict[str, Any]]  # records of this plan's failed or diverged runs
    problems: list[str]  # corrupt lines of runs.jsonl


def sweep(
    tasks: Sequence[RunTask],
    corpus: Corpus,
    store: RunStore,
    *,
    executor: str = "process",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run the tasks not yet in ``store`` and append each record as it arrives.

    Args:
        tasks: the plan's runs (see :func:`rnnreg.ablation.tasks_for`).
        corpus: the data every task splits by its seed.
        store: where finished runs are; a failed run (an error, or a worker that died) is retried by the next call,
            a diverged one is a result.
        executor: "process" (a local pool) or "ray".
        workers: parallel runs (default: one per core).
        threads: torch threads per worker (default: the cores left over, so workers x threads <= cores).
        address: an existing Ray cluster (host:port); None starts a local one.
        progress: a tqdm bar over the runs (default: only when stdout is a terminal).
        on_record: called with each new record, in the driver.
    """
    check_executor(executor, address)
    state = store.load()
    keys = {t.key for t in tasks}
    todo = [t for t in tasks if state.records.get(t.key, {}).get("status") not in ("ok", "diverged")]
    todo = list({t.key: t for t in todo}.values())  # a variant identical to another runs once
    n_workers, threads = split_cores(workers, len(todo), threads=threads)
    events: Iterator[Event] = iter(())  # nothing to run: start no pool and no Ray
    if todo:
        runner = run_ray(todo, corpus, n_workers, threads, address) if executor == "ray" else None
        events = runner or run_local(todo, corpus, n_workers, threads)
    from tqdm import tqdm

    show = sys.stdout.isatty() if progress is None else progress
    bar = tqdm(total=len(todo), unit="run", disable=not show or not todo, dynamic_ncols=True)
    running = failed = 0
    try:
        for kind, payload in events:
            if kind == "started":
                running += 1
            elif kind == "requeued":  # in flight when another worker died; it runs again
                running -= 1
            else:
                running -= 1
                store.append(payload)
                state.records[payload["key"]] = payload
                if payload["status"] != "ok":
                    failed += 1
                if on_record is not None:
                    on_record(payload)
                bar.update(1)
            bar.set_postfix_str(f"done {bar.n}, running {running}, failed {failed}")
    finally:
        bar.close()
    records = {k: r for k, r in state.records.items() if k in keys}
    return SweepResult(
        records=records,
        ran=len(todo),
        reused=len(keys) - len({t.key for t in todo}),
        failed=[r for r in records.values() if r["status"] != "ok"],
        problems=state.problems,
    )

"""k trials on one device as k separate processes: k from a short probe, then every job of a plan.

Each process is a fresh `spawn` interpreter (its own CUDA context, as Ray's fractional-GPU trials
have) that runs `ssrl.train.finetune` / `pretrain` on one job's config at a time. Entry points
import ssrl only after `worker_init`, which lets ssrl.data import where wfdb is absent.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import resource
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from bench.gpu_env import worker_init

if TYPE_CHECKING:  # bench.gpu_plan imports ssrl, which spawned processes may import only after worker_init
    from bench.gpu_plan import Job

CANDIDATES = (1, 2, 4, 8)
MIN_GAIN = 1.1  # a larger k is tried only while the last one was this much faster than all before
NEAR_BEST = 0.95  # the smallest k within this share of the best throughput is chosen
MEM_SHARE = 0.85  # k processes must fit in this share of the device memory
CUDA_CONTEXT_MIB = 600  # a process's CUDA context, which torch's allocator does not count
PROBE_TIMEOUT_S = 300


class _ProbeDone(Exception):
    """Raised from the report callback once the timed epoch is over (skips the final evaluation)."""


class _Deadline(Exception):
    """Raised from the report callback after an epoch that ended past the deadline: the trial is cut there."""


def _peak_mib(device: str) -> float:
    """This process's peak memory: CUDA memory reserved (+ context) on a GPU, resident set size on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_reserved(torch.device(device)) / 2**20 + CUDA_CONTEXT_MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: dict, out_dir: str, deadline: float = math.inf) -> dict:
    """Run one Job (as a dict) here: wall, epochs, seconds per epoch and setup, peak memory, result.

    An epoch that ends past `deadline` (a time.time() value) cuts the trial there; one that starts
    past it does not run at all. Its per-epoch state file is removed at the end (only a resume reads it).
    """
    import torch

    from ssrl.config import FinetuneConfig, PretrainConfig, from_dict
    from ssrl.train import finetune, pretrain

    cfg = from_dict(PretrainConfig if job["kind"] == "pretrain" else FinetuneConfig, job["config"])
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(cfg.device))
    stamps: list[float] = []

    def report(row: dict) -> None:
        if not row.get("done"):
            stamps.append(time.time())
            if stamps[-1] > deadline:
                raise _Deadline

    start, result, error = time.time(), {}, None
    cut = start > deadline
    try:
        if not cut:
            result = (pretrain if job["kind"] == "pretrain" else finetune)(cfg, report, Path(out_dir))
    except _Deadline:
        cut = True
    except Exception as e:  # noqa: BLE001 - a failed trial is a row of the report, not the end of the bench
        error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"[:300]
    (Path(out_dir) / "state.pt").unlink(missing_ok=True)
    return _row(job, start, time.time(), stamps, error, cut, _peak_mib(cfg.device), result)


def _row(job: dict, start: float, end: float, stamps: list[float], error: str | None, cut: bool,
         peak_mib: float | None, result: dict) -> dict:
    """A job's result row: timings from the epoch time stamps, and the result's headline numbers."""
    epoch_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
    keep = ("test_macro_auroc", "best_epoch", "epochs_run", "n_labelled_used", "precision", "n_pool", "best_probe_score")
    return {"name": job["name"], "kind": job["kind"], "group": job["group"], "start": start, "end": end,
            "wall_s": end - start, "epochs": len(stamps), "epoch_s": epoch_s,
            "setup_s": max(0.0, stamps[0] - start - (epoch_s or 0.0)) if stamps else None,
            "peak_mib": None if peak_mib is None else round(peak_mib, 1), "pid": os.getpid(), "error": error,
            "cut": cut, "result": {k: result[k] for k in keep if k in result}}


def _probe_worker(config: dict, barrier: object, queue: object, threads: int) -> None:
    """Fine-tune for two epochs: wait for the others after the first, time the second."""
    worker_init(threads)
    from ssrl.config import FinetuneConfig, from_dict
    from ssrl.train import finetune

    marks: dict[str, float] = {}

    def report(row: dict) -> None:
        if row.get("epoch") == 1 and not row.get("done"):
            barrier.wait(timeout=PROBE_TIMEOUT_S)  # type: ignore[attr-defined]
            marks["t0"] = time.time()
        elif row.get("epoch") == 2:
            marks["t1"] = time.time()
            raise _ProbeDone

    cfg = from_dict(FinetuneConfig, {**config, "epochs": 2, "patience": 2})
    try:
        finetune(cfg, report, None)
    except _ProbeDone:
        queue.put({**marks, "peak_mib": _peak_mib(cfg.device)})  # type: ignore[attr-defined]
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        barrier.abort()  # type: ignore[attr-defined]
        queue.put({"error": f"{type(e).__name__}: {e}"[:300]})  # type: ignore[attr-defined]


def probe_once(config: dict, k: int, threads: int) -> dict:
    """k processes fine-tune at once; epochs per second over all of them in the timed epoch."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_probe_worker, args=(config, barrier, queue, threads)) for _ in range(k)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    got = []
    try:
        got = [queue.get(timeout=PROBE_TIMEOUT_S) for _ in procs]
    except Exception as e:  # noqa: BLE001 - queue.Empty: a process died without a word
        got.append({"error": f"no answer from a probe process ({type(e).__name__})"})
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [g["error"] for g in got if "error" in g]
    out = {"k": k, "wall_s": round(time.perf_counter() - t0, 2)}
    if errors:
        return {**out, "error": errors[0]}
    span = max(g["t1"] for g in got) - min(g["t0"] for g in got)
    return {**out, "epochs_per_s": round(k / span, 3), "peak_mib": round(max(g["peak_mib"] for g in got), 1)}


def choose_k(results: list[dict], memory_mib: float | None) -> int:
    """The smallest k within NEAR_BEST of the best probed throughput whose processes fit in memory."""
    ok = [r for r in results if "error" not in r
          and (memory_mib is None or r["k"] * r["peak_mib"] <= MEM_SHARE * memory_mib)]
    if not ok:
        return 1
    best = max(r["epochs_per_s"] for r in ok)
    return min(r["k"] for r in ok if r["epochs_per_s"] >= NEAR_BEST * best)


def probe(config: dict, candidates: tuple[int, ...], cpus: int, memory_mib: float | None) -> dict:
    """Probe k = 1, 2, 4, ... while each step pays (MIN_GAIN) and fits; the chosen k and every measurement."""
    results: list[dict] = []
    for k in candidates:
        r = probe_once(config, k, max(1, cpus // k))
        results.append(r)
        done = [x["epochs_per_s"] for x in results[:-1] if "error" not in x]
        if "error" in r or choose_k([r], memory_mib) != k or (done and r["epochs_per_s"] < MIN_GAIN * max(done)):
            break
    return {"k": choose_k(results, memory_mib), "candidates": list(candidates), "runs": results,
            "rule": f"smallest k within {NEAR_BEST:.0%} of the best epochs/s that fits {MEM_SHARE:.0%} of memory; "
                    f"larger k tried while the gain was >= {MIN_GAIN}x"}


def run_packed(jobs: list[Job], k: int, threads: int, work_dir: Path, deadline: float = math.inf) -> list[dict]:
    """Every job in k worker processes, longest first; a job that needs another starts once that one is done.

    Past `deadline` running trials stop after their epoch and the others do not start (rows with cut=True).
    """
    ctx = mp.get_context("spawn")
    waiting = [j for j in jobs if j.needs]
    results: list[dict] = []
    with ProcessPoolExecutor(k, mp_context=ctx, initializer=worker_init, initargs=(threads,)) as pool:
        def submit(batch: list[Job]) -> dict:
            return {pool.submit(run_job, asdict(j), str(work_dir / j.name), deadline): j
                    for j in sorted(batch, key=lambda j: -j.cost)}

        futures = submit([j for j in jobs if not j.needs])
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                job = futures.pop(f)
                try:
                    results.append(f.result())
                except BrokenProcessPool as e:  # a worker died (e.g. killed): this job and the queued ones fail
                    results.append(_not_run(job, f"worker process died ({e})"))
                released = [w for w in waiting if w.needs == job.name]
                waiting = [w for w in waiting if w.needs != job.name]
                if results[-1]["cut"]:
                    results += [_not_run(w, None, cut=True) for w in released]
                elif results[-1]["error"]:
                    results += [_not_run(w, f"{job.name} failed") for w in released]
                else:
                    futures.update(submit(released))
    return results + [_not_run(w, f"{w.needs} never ran") for w in waiting]


def _not_run(job: Job, error: str | None, cut: bool = False) -> dict:
    """The row of a job that never started: its prerequisite failed, or was cut at the deadline."""
    now = time.time()
    return {**_row(asdict(job), now, now, [], error, cut, None, {}), "pid": None}

"""One sweep invocation: check inputs, run the stages on Ray, write results, track in MLflow."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssrl.data import open_ptbxl, pin_cache_dir, task_labels
from ssrl.errors import USER_ERRORS
from ssrl.kinds import kind_of
from ssrl.models import encoder_kwargs
from ssrl.report import constant_macro_f1, results_markdown, write_json_atomic, write_text_atomic
from ssrl.report.rescore import FILE_NAME
from ssrl.report.stats import STATS_VERSION, holm_account
from ssrl.train.checkpoint import CheckpointError
from ssrl.tune import console, describe, predictions, stages
from ssrl.tune.checks import check_pretrain
from ssrl.tune.dataset import DatasetInfo, locate, open_dataset
from ssrl.tune.meta import split
from ssrl.tune.options import LaunchOptions, scale_of, specs
from ssrl.tune.search import describe_sampler
from ssrl.tune.spec import Cell, SweepError, SweepSpec
from ssrl.tune.tracking import Tracker, TrialLogger, connect, error_text, git_commit, redact
from ssrl.tune.trainables import METRIC

STATE = "state.json"
_clock = time.monotonic  # what stage_seconds are measured with (tests put a fake clock here)


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SweepError(f"out dir {folder} is not writable ({e.strerror}); pass --out DIR") from None


def _load_state(out_dir: Path, resume: bool) -> dict[str, Any]:
    path = out_dir / STATE
    if not resume:
        return {"run_id": time.strftime("%Y%m%d-%H%M%S"), "stages": {}}
    if not path.exists():
        raise SweepError(f"--resume: nothing to resume in {out_dir} (no {STATE}); run without --resume")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise SweepError(f"--resume: {path} is unreadable; run without --resume to start afresh") from None


def _ray_init(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray; True when this call connected this process."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as e:
            raise SweepError(f"cannot reach the Ray cluster at {address} ({str(e).splitlines()[0][:160]}); "
                             "start it (ray up / ray start --head) or leave out --address") from None
    else:  # a local Ray; no dashboard (a cluster's is bound to 127.0.0.1 by cluster.yaml)
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1")
    return True


def _fit_resources(opts: LaunchOptions, spec: SweepSpec) -> tuple[float, float]:
    """Trial CPUs/GPUs: the user's flags win; defaults shrink to what the cluster has."""
    import ray

    have = ray.cluster_resources()
    cpus = opts.cpus_per_trial if opts.cpus_per_trial is not None else min(spec.resources.cpus_per_trial,
                                                                           have.get("CPU", 1))
    gpus = opts.gpus_per_trial if opts.gpus_per_trial is not None else spec.resources.gpus_per_trial
    if opts.gpus_per_trial is None and have.get("GPU", 0) == 0:
        gpus = 0
    return cpus, gpus


@dataclass
class _Checked:
    """An invocation whose inputs all passed their checks: what run_sweep found before Ray starts."""

    opts: LaunchOptions
    spec: SweepSpec
    pre_spec: SweepSpec | None
    scale_why: str
    out_dir: Path
    state: dict[str, Any]
    uri: str
    client: Any  # MlflowClient
    dataset: DatasetInfo
    data_how: str
    storage: str
    externals: list = dataclasses.field(default_factory=list)  # ssrl.train.external.LoadedExternal per entry

    @property
    def log(self) -> Path | None:
        """Ray's and Tune's output: <out>/logs/<sweep>-<run id>.log (None with --verbose: the console)."""
        if self.opts.verbose:
            return None
        return self.out_dir.parent / "logs" / f"{self.spec.name}-{self.state['run_id']}.log"


def run_sweep(opts: LaunchOptions) -> dict[str, Any]:
    """Run a whole sweep and return its results dict (also written under <out>/<sweep>/).

    Every input is checked before Ray starts (`_check`). The console shows a header, a progress line
    per stage, failed trials and the summary; Ray's and Tune's own output goes to <out>/logs/ unless
    opts.verbose. With opts.dry_run it prints the plan and returns {} having started and written nothing.
    """
    pin_cache_dir()  # before Ray starts: its workers inherit the variable but run in trial folders
    if opts.dry_run:
        print(describe.plan(opts), flush=True)
        return {}
    run = _check(opts)
    with console.session(run.log, discard_on=USER_ERRORS) as con:  # USER_ERRORS here: the cluster is unreachable
        con.say(describe.header(run))
        started = _ray_init(opts.address)
        try:
            results, experiment_id = _execute(run, con)
            con.say(describe.summary(results, run, experiment_id))
        finally:
            if started:  # inside the session: Ray's goodbyes go to the log too
                import ray

                ray.shutdown()
    return results


def _check(opts: LaunchOptions) -> _Checked:
    """Every input, cheapest first: sweep files, out dir, --resume state, tracking store (seconds), data
    (metadata, then the signal cache: minutes on first use), cell sizes, reused pretrained checkpoints.

    A failed check raises one of ssrl.errors.USER_ERRORS having overwritten nothing (at most an empty
    default MLflow store is created).
    """
    scale, why = scale_of(opts)
    spec, pre_spec = specs(opts, scale)
    out_dir = Path(opts.out).expanduser().resolve() / spec.name
    _writable(out_dir)
    state = _load_state(out_dir, opts.resume)
    if opts.resume and state.get("scale") not in (None, scale):
        raise SweepError(f"--resume: {out_dir} holds a {state['scale']} run; pass --scale {state['scale']}")
    uri = opts.tracking_uri or f"sqlite:///{out_dir.parent / 'mlflow.db'}"
    client = connect(uri)
    root, how = locate(opts.data_root, spec.data_records)
    dataset = open_dataset(root, opts.sampling_rate)
    if opts.resume and state.get("fingerprint") not in (None, dataset.fingerprint):
        raise SweepError(f"--resume: {out_dir} was run on other data (fingerprint {state['fingerprint'][:12]})")
    storage = opts.storage or str(out_dir.parent / "ray")
    externals = _load_externals(spec, dataset)
    spec = dataclasses.replace(spec, pretrained=tuple(e.resolved() for e in externals))
    _preflight(spec, pre_spec, dataset, storage)
    state.update(scale=scale, fingerprint=dataset.fingerprint, sweep=spec.name)
    return _Checked(opts, spec, pre_spec, why, out_dir, state, uri, client, dataset, how, storage, externals)


def _load_externals(spec: SweepSpec, dataset: DatasetInfo) -> list:
    """Every `pretrained:` entry built and its weights loaded and checked (ssrl.train.external): before Ray."""
    if not spec.pretrained:
        return []
    from ssrl.train.external import load_external

    length = open_ptbxl(dataset.root, dataset.sampling_rate).signals.shape[-1]  # samples per record
    return [load_external(e, dataset.sampling_rate, length) for e in spec.pretrained]


def _execute(run: _Checked, con: console.Console) -> tuple[dict[str, Any], str]:
    """On a started Ray: open the MLflow parent run, run the stages, write and log the results."""
    spec, pre_spec, state, opts = run.spec, run.pre_spec, run.state, run.opts
    cpus, gpus = _fit_resources(opts, spec)
    pre_cpus, pre_gpus = _fit_resources(opts, pre_spec) if pre_spec is not None else (cpus, gpus)
    con.say(describe.compute(run, cpus, gpus, pre_cpus, pre_gpus))
    tags = {"sweep": spec.name, "scale": spec.scale, "dataset": run.dataset.name,
            "dataset_fingerprint": run.dataset.fingerprint, "git_commit": git_commit(), "tracking_uri": redact(run.uri),
            # each encoder pretrained elsewhere: its file, sha256, encoder and input contract
            **{f"pretrained.{e.entry.name}": json.dumps(e.record(), sort_keys=True) for e in run.externals}}
    tracker = Tracker(run.client, f"ssrl-{spec.name}", state["run_id"], state.get("parent_run_id"), tags)
    state["parent_run_id"] = tracker.parent_id
    write_json_atomic(run.out_dir / STATE, state)
    ctx = stages.Context(storage=run.storage, run_id=state["run_id"], dataset=run.dataset, cpus=cpus, gpus=gpus,
                         max_concurrent=opts.max_concurrent, resume=opts.resume,
                         callbacks=lambda stage: [TrialLogger(tracker, stage), console.Progress(
                             stage, METRIC if stage == "search" else None)],
                         max_failures=spec.resources.max_failures, pretrain_cpus=pre_cpus, pretrain_gpus=pre_gpus,
                         say=con.say)
    try:
        results = _stages(ctx, spec, pre_spec, state, run.out_dir, run.externals)
    except BaseException as e:
        tracker.close([], status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    files = _write_results(results, run.out_dir)
    _log_summaries(tracker, results)
    tracker.close(files)
    return results, tracker.exp_id


def _preflight(spec: SweepSpec, pre_spec: SweepSpec | None, dataset: DatasetInfo, storage: str) -> None:
    """Checks that need the data or the storage, made in the driver before any trial can fail on them."""
    sized = [c for c in spec.cells if c.n_labelled]
    if sized:  # balanced N-per-class subsets: every class of the train folds must hold N
        have = task_labels(open_ptbxl(dataset.root, dataset.sampling_rate), spec.task).split("train").per_class()
        for cell in sized:
            need = spec.finetune_config(cell).n_per_class
            short = ", ".join(f"{c} has {n}" for c, n in have.items() if n < need)
            if short:
                raise SweepError(f"{spec.path} (scale {spec.scale}): {cell.group} needs {need} train records per "
                                 f"class, but in {dataset.root} {short}; lower n")
    if pre_spec is None:
        return
    from ssrl.ssl import METHODS

    for method in spec.ssl_methods:
        if method not in METHODS:
            raise SweepError(f"{spec.path}: pretrain method {method!r} is unknown; use one of {', '.join(METHODS)}")
        cfg = stages.pretrain_config(pre_spec, method, pre_spec.seeds[0], dataset)
        check_pretrain(cfg)  # this method on the pretrain sweep's encoder (a plug-in is built once here)
        _check_encoders(spec, pre_spec, cfg)
        for seed in pre_spec.seeds:  # a reused checkpoint must hold the encoder its key promises
            uri = stages.pretrained_uri(storage, stages.pretrain_config(pre_spec, method, seed, dataset),
                                        dataset.fingerprint)
            if stages.published(uri):
                blob = stages.read_published_encoder(uri)
                got = (blob["encoder"], json.loads(blob["encoder_kwargs"]))
                if got != (cfg.encoder, encoder_kwargs(cfg.encoder_width)):
                    raise CheckpointError(f"{uri}: holds encoder {got[0]!r} {got[1]}, but {pre_spec.path.name} "
                                          f"pretrains {cfg.encoder!r} {encoder_kwargs(cfg.encoder_width)}; "
                                          "remove that folder to pretrain again")


def _check_encoders(spec: SweepSpec, pre_spec: SweepSpec, cfg: Any) -> None:
    """Every SSL track fine-tunes the encoder (and width) that the pretrain sweep trains."""
    for cell in {c.track: c for c in spec.cells if c.method in spec.pretrain_methods}.values():
        ft = spec.finetune_config(cell)
        want = (ft.encoder, ft.encoder_width)
        if want != (cfg.encoder, cfg.encoder_width):
            raise SweepError(f"{spec.path} (scale {spec.scale}): track {cell.track} fine-tunes encoder {want[0]!r} "
                             f"width {want[1]}, but {pre_spec.path} pretrains {cfg.encoder!r} width "
                             f"{cfg.encoder_width}; the checkpoint would not load, make them agree")


@contextlib.contextmanager
def _timed(stage: str, state: dict, out_dir: Path) -> Iterator[None]:
    """Add the block's wall seconds to state["stage_seconds"][stage] and write state.json, also when it raises.

    Summed over the invocations of a run (a --resume adds the rest), so an interrupted run's state.json
    still says how long each stage it reached ran.
    """
    t0 = _clock()
    try:
        yield
    finally:
        spent = state.setdefault("stage_seconds", {})
        spent[stage] = round(spent.get(stage, 0.0) + _clock() - t0, 1)
        write_json_atomic(out_dir / STATE, state)


def _stages(ctx: stages.Context, spec: SweepSpec, pre_spec: SweepSpec | None, state: dict,
            out_dir: Path, externals: list | None = None) -> dict[str, Any]:
    if not spec.kind.evaluates:
        with _timed("pretrain", state, out_dir):
            done = stages.ensure_pretrained(ctx, spec, spec.methods)
        rows = [{"track": r["method"], "seed": r["seed"], **stages.read_metrics(r["uri"]), "checkpoint": r["uri"]}
                if "uri" in r else {"track": r["method"], "seed": r["seed"], "status": "failed", "error": r["error"]}
                for r in done]
        return _results(spec, ctx.dataset, rows, "probe_score", state)
    pretrained, lost, encoders, pretraining = {}, [], None, None
    if spec.needs_pretraining:
        with _timed("pretrain", state, out_dir):
            done = stages.ensure_pretrained(ctx, pre_spec, spec.pretrain_methods)
        pretrained = {r["method"]: r["uri"] for r in reversed(done) if "uri" in r}
        encoders, pretraining = _pretraining(done, spec, pre_spec)
        spec, lost = _without_failed_methods(ctx, spec, done, pretrained)
    for loaded in externals or []:  # published like a pretraining: trials on any node fetch them the same way
        pretrained[loaded.entry.name] = stages.publish_external(ctx.storage, loaded)
    chosen = state["stages"].get("search")
    if spec.search.enabled and chosen is None and spec.searched_cells:
        with _timed("search", state, out_dir):
            chosen = stages.search(ctx, spec, pretrained)
        for group in sorted({c.group for c in spec.searched_cells} - set(chosen)):
            ctx.say(f"warning: search: no trial of {group} finished; it runs with the sweep file's lr and "
                    "weight_decay")
        state["stages"]["search"] = chosen
        write_json_atomic(out_dir / STATE, state)
    grid = []
    if spec.cells:
        with _timed("eval", state, out_dir):
            grid = stages.evaluate(ctx, spec, pretrained, chosen or {}, encoders)
    rows = [_row(r, spec) for r in grid]
    predictions.write(grid, rows, spec.metric, out_dir)  # test probabilities: re-scoring needs no re-run
    rows += lost
    results = _results(spec, ctx.dataset, rows, spec.metric, state, chosen, pretraining)
    if externals:
        results["pretrained"] = [e.record() for e in externals]  # name, file, sha256, encoder, input contract
    return results


def _without_failed_methods(ctx: stages.Context, spec: SweepSpec, done: list[dict],
                            pretrained: dict[str, str]) -> tuple[SweepSpec, list[dict]]:
    """The spec without the SSL cells whose method's pretraining failed, and those cells' skipped rows."""
    errors = {r["method"]: r["error"] for r in done if "uri" not in r}
    failed = {m: errors.get(m, "no pretraining came back") for m in spec.pretrain_methods if m not in pretrained}
    if not failed:
        return spec, []
    lost_cells = [c for c in spec.cells if c.method in failed]
    lost = [_skipped_row(c, seed, spec, f"pretraining {c.method} failed: {failed[c.method]}"[:300])
            for c in lost_cells for seed in spec.seeds]
    for method, error in failed.items():
        groups = ", ".join(c.group for c in lost_cells if c.method == method)
        ctx.say(f"SKIPPED {len(spec.seeds) * sum(c.method == method for c in lost_cells)} trials of {groups} "
                f"(not started: pretraining {method} failed: {error})"[:400])
    return dataclasses.replace(spec, cells=tuple(c for c in spec.cells if c not in lost_cells)), lost


def _pretraining(done: list[dict], spec: SweepSpec,
                 pre_spec: SweepSpec) -> tuple[dict[str, dict[int, str]] | None, dict]:
    """Which encoder each evaluation seed fine-tunes, per method, and results.json's account of it.

    When the pretraining sweep pretrained every evaluation seed of a method (paper scale), seed s fine-tunes
    the encoder pretrained with seed s, so intervals and paired tests include pretraining variance; otherwise
    all seeds share that method's first pretrained encoder.
    """
    uris: dict[str, dict[int, str]] = {}
    for r in done:
        if "uri" in r:
            uris.setdefault(r["method"], {})[r["seed"]] = r["uri"]
    per_seed = bool(uris) and all(set(spec.seeds) <= set(u) for u in uris.values())
    shared = sorted({next(iter(u)) for u in uris.values()})
    info = {"methods": list(spec.pretrain_methods), "selection": str(pre_spec.train.get("selection", "last")),
            "per_seed": per_seed, "seeds": list(spec.seeds) if per_seed else shared}
    return ({m: {s: u[s] for s in spec.seeds} for m, u in uris.items()} if per_seed else None), info


def _skipped_row(cell: Cell, seed: int, spec: SweepSpec, reason: str) -> dict[str, Any]:
    """The row of a run that was not started because the pretraining it needs failed."""
    return {"track": cell.track, "method": cell.method or None, "seed": int(seed), **spec.kind.where(cell),
            "bn_stats": spec.finetune_config(cell).bn_stats_applied, "status": "skipped",
            "error": f"skipped: {reason}"}


def _row(result: Any, spec: SweepSpec) -> dict[str, Any]:
    """One per-seed row of results.json from a Tune result (failed trials keep their reason)."""
    (cfg, meta), m = split(result.config), result.metrics or {}
    bn_stats = spec.finetune_config(spec.cell(meta.group)).bn_stats_applied
    row: dict[str, Any] = {"track": meta.track, "method": meta.method or None, "seed": int(cfg["seed"]),
                           **spec.kind.where(meta), "bn_stats": bn_stats}
    if result.error is not None or not m.get("done"):
        return {**row, "status": "failed", "error": stages.error_line(result)}
    keep = {k: v for k, v in m.items() if k.startswith("test_") or k in (
        "best_epoch", "collapsed", "best_val_score", "epochs_run", "n_labelled_used")}  # n_labelled: the cell's key
    keep["collapsed"] = bool(keep["collapsed"]) if "collapsed" in keep else None  # None: frozen, no verdict
    return {**row, **keep, "status": "ok", "lr": cfg.get("lr"), "weight_decay": cfg.get("weight_decay"),
            "precision": m.get("precision")}


def _results(spec: SweepSpec, dataset: DatasetInfo, rows: list[dict], metric: str, state: dict,
             chosen: dict | None = None, pretraining: dict | None = None) -> dict[str, Any]:
    cells = spec.kind.cells(rows, metric, spec.compared_methods)
    out: dict[str, Any] = {
        "sweep": spec.name, "scale": spec.scale, "run_id": state["run_id"],
        "dataset": dataset.as_dict(spec.task or "superdiagnostic"), "metric": metric, "cells": cells,
        # n_failed: runs without a result, whether they failed or were skipped (n_skipped of them)
        "n_runs": len(rows), "n_failed": sum(r.get("status") in ("failed", "skipped") for r in rows),
        "n_skipped": sum(r.get("status") == "skipped" for r in rows),
        "precision": {"requested": str(spec.train.get("precision", "auto")),
                      "used": sorted({r["precision"] for r in rows if r.get("precision")})},
    }
    if state.get("stage_seconds"):  # wall seconds per stage (pretrain, search, eval); absent in older files
        out["stage_seconds"] = dict(state["stage_seconds"])
    out["multiplicity"] = holm_account(cells)  # the families of contrasts and how their p-values are adjusted
    out["stats_version"] = STATS_VERSION
    if spec.search.enabled and spec.searched_cells:  # what drew the searched lr and weight decay
        out["search"] = describe_sampler(spec.search.samples_per_group)
    if chosen:
        out["chosen_hyperparameters"] = chosen
    if pretraining:
        out["pretraining"] = pretraining  # {methods, selection, per_seed, seeds}
    if spec.kind.baseline_track:
        out["baseline_track"] = spec.kind.baseline_track
    if spec.kind.trivial_baseline:
        out["trivial_baseline"] = trivial_baseline(dataset, spec.task)
    return out


def trivial_baseline(dataset: DatasetInfo, task: str) -> dict[str, Any]:
    """Macro-F1 on the test fold of always predicting the train pool's majority class."""
    labels = task_labels(open_ptbxl(dataset.root, dataset.sampling_rate), task)
    train, test = labels.split("train"), labels.split("test")
    majority = int(np.bincount(train.y, minlength=len(labels.classes)).argmax())
    cls = labels.classes[majority]
    return {"name": f"always {cls}", "class": cls,
            "value": constant_macro_f1(test.y, majority, len(labels.classes))}


def _write_results(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.json, results.md and the plot, each written atomically; also archived per run."""
    import ssrl.report

    files = [write_json_atomic(out_dir / "results.json", results),
             write_text_atomic(out_dir / "results.md", results_markdown(results))]
    plot = kind_of(results["sweep"]).plot
    if plot:
        files.append(getattr(ssrl.report, plot)(results, out_dir / f"{results['sweep']}.png"))
    write_json_atomic(out_dir / "archive" / results["run_id"] / "results.json", results)
    if (out_dir / FILE_NAME).exists():
        files.append(out_dir / FILE_NAME)  # the test probabilities behind every cell (python -m ssrl.report rescore)
    return files


def _log_summaries(tracker: Tracker, results: dict[str, Any]) -> None:
    """One stage=summary run per results cell, tagged like its trials (group: spec.Cell.group)."""
    for cell in results["cells"]:
        bn = cell.get("bn_stats")  # precise is the default: no suffix, as in the trials' group names
        group = Cell(cell["track"], cell.get("fraction"), cell.get("n_labelled"),
                     "" if bn in (None, "precise") else bn, cell.get("method") or "").group
        lo, hi = cell.get("ci95") or (None, None)
        metrics = {"mean": cell.get("mean"), "std": cell.get("std"), "ci95_low": lo, "ci95_high": hi,
                   "collapse_rate": cell.get("collapse_rate"), "single_class_rate": cell.get("single_class_rate"),
                   "best_epoch_mean": cell.get("best_epoch_mean"),
                   "n_seeds": len(cell.get("seeds", [])), "n_failed": cell.get("n_failed", 0)}
        tags = {"track": cell["track"], "fraction": cell.get("fraction"), "n_labelled": cell.get("n_labelled"),
                "n_labelled_used": cell.get("n_labelled_used"), "group": group, "metric": results["metric"],
                "method": cell.get("method")}
        tracker.summary(f"summary/{group}", f"summary-{group}", tags, {k: v for k, v in metrics.items() if v is not None})


__all__ = ["LaunchOptions", "run_sweep", "error_text"]

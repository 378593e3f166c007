"""The Tuners of a sweep: pretraining (reused when finished), per-group search, and the seed grid."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from ssrl.config import TRACKS, PretrainConfig, from_dict, to_dict
from ssrl.registry import is_plugin
from ssrl.tune import raycompat
from ssrl.tune.meta import GROUP, META, TrialMeta, trial_space
from ssrl.tune.search import GroupedASHA, GroupedOptunaSearch, best_per_group
from ssrl.tune.spec import Cell, SweepSpec
from ssrl.tune.trainables import METRIC, finetune_trainable, pretrain_trainable, resilient

# Settings that say where and how to run, not what is learnt: left out of the reuse key. `compile` changes
# float rounding only, as the device does (and kept out, every key stays what it was before the setting).
_NOT_IN_KEY = ("data_root", "cache_dir", "device", "compile")


@dataclass
class Context:
    """Everything the stages of one invocation share."""

    storage: str  # absolute local path or URI (s3://...)
    run_id: str
    dataset: Any  # DatasetInfo
    cpus: float
    gpus: float
    max_concurrent: int | None
    resume: bool
    callbacks: Callable[[str], list] = field(default=lambda stage: [])
    max_failures: int = 2
    pretrain_cpus: float | None = None  # pretraining trials' own resources (sweeps/pretrain.yaml); None: cpus
    pretrain_gpus: float | None = None
    say: Callable[[str], None] = print  # a line for the person watching (the sweep's console)


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def pretrain_key(cfg: PretrainConfig, fingerprint: str) -> str:
    """Reuse key of a pretraining: its learning config, what its augmentation preset does, and the data's fingerprint."""
    from ssrl.augment import PRESETS  # a preset redefined under the same name must not reuse old encoders

    d = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_IN_KEY}
    d["augment_ops"] = repr(PRESETS.get(cfg.augment))
    code = {n: _plugin_source(n) for n in (cfg.method, cfg.encoder) if is_plugin(n)}
    if code:  # a plug-in whose code changed must not reuse encoders its old code pretrained
        d["plugin_code"] = code
    return _folder_key(f"{cfg.method}-{cfg.encoder}", {"cfg": d, "data": fingerprint})


def _folder_key(name: str, what: dict[str, Any]) -> str:
    """<name>-<12 hex of what's sha256>: a folder name ('pkg.mod:Cls' is none) that changes when `what` does."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return f"{safe}-{hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]}"


def _plugin_source(name: str) -> str:
    """sha256 of the source file of a plug-in's module (the class's code and whatever it calls there)."""
    module = importlib.import_module(name.split(":", 1)[0])
    return hashlib.sha256(Path(inspect.getfile(module)).read_bytes()).hexdigest()[:16]


def _run(ctx: Context, name: str, trainable: Callable, param_space: dict, resources: dict,
         tune_config: tune.TuneConfig, stage: str) -> tune.ResultGrid:
    """Run (or, with --resume, continue) one Tuner named `name` in the run storage."""
    path = _join(ctx.storage, name)
    wrapped = tune.with_resources(resilient(trainable), resources)
    if ctx.resume and tune.Tuner.can_restore(path):
        # Tune stores sample_from functions as placeholders and resolves them only from a param_space
        # given again: without it, trials not generated before the stop get ("__fn_ph", id) values.
        tuner = tune.Tuner.restore(path, wrapped, param_space=param_space, resume_unfinished=True,
                                   resume_errored=True)
    else:
        run_config = tune.RunConfig(
            name=name, storage_path=ctx.storage, verbose=1, callbacks=ctx.callbacks(stage),
            failure_config=tune.FailureConfig(max_failures=ctx.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )
        tuner = tune.Tuner(wrapped, param_space=param_space, tune_config=tune_config, run_config=run_config)
    handlers = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    grid = tuner.fit()
    interrupted = _tune_was_interrupted(handlers)
    # On Ctrl-C Tune saves the experiment and returns early; going on would record the trials it
    # left as failed or, when max_concurrent_trials held them back, not at all (and a cut-short
    # search as chosen). Stop here instead: --resume continues them.
    trials = raycompat.grid_trials(grid)
    left = max(0, _planned_trials(param_space, tune_config) - len(trials)) + sum(
        _unfinished(t, early_stops=tune_config.scheduler is not None) for t in trials)
    if left or interrupted:
        raise KeyboardInterrupt(f"{name}: {left} trials unfinished")
    return grid


RunTuner = Callable[..., tune.ResultGrid]  # (ctx, name, trainable, param_space, resources, tune_config, stage)
_wrapper: Callable[[RunTuner], RunTuner] | None = None


def wrap_tuner_runs(wrapper: Callable[[RunTuner], RunTuner] | None) -> None:
    """Start every later Tuner of every stage through wrapper(run), e.g. to time it (bench.sweep); None: unwrapped.

    run(ctx, name, trainable, param_space, resources, tune_config, stage) runs one Tuner and returns its
    ResultGrid; `stage` is "pretrain", "search" or "eval". A wrapper may change resources and tune_config.
    """
    global _wrapper
    _wrapper = wrapper


def _tuner(*args: Any) -> tune.ResultGrid:
    """_run, through the wrapper of wrap_tuner_runs when one is set."""
    return (_wrapper(_run) if _wrapper is not None else _run)(*args)


_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGUSR1") if hasattr(signal, n))


def _tune_was_interrupted(before: dict) -> bool:
    """Whether Tune's stop handler fired during fit; the handlers from before fit are put back either way.

    Tune installs one handler for SIGINT and SIGUSR1 and, when it fires, puts back the old SIGINT
    handler only: after a stop the two differ. Left in place, Tune's handler would swallow a later
    Ctrl-C (while results are written) with a warning.
    """
    if threading.current_thread() is not threading.main_thread() or len(before) < 2:
        return False
    sigint, sigusr1 = (signal.getsignal(s) for s in _STOP_SIGNALS)
    installed = sigusr1 is not before[_STOP_SIGNALS[1]] and not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    for sig, handler in before.items():
        signal.signal(sig, handler)
    return installed and sigint is not sigusr1


def _unfinished(trial: Any, early_stops: bool) -> bool:
    """Whether an interrupt left this trial to do: it has not ended, or it ended without its final report.

    Tune ends the trials it had started (or given an actor) when it is stopped, so their status alone
    does not tell. With a scheduler that stops trials early, only a trial that never reported counts.
    """
    if trial.status == "ERROR":
        return False
    last = getattr(trial, "last_result", None)
    if trial.status != "TERMINATED":
        return True
    if last is None:  # no results known: the status decides
        return False
    return not last if early_stops else not last.get("done")


def _planned_trials(param_space: dict, tune_config: tune.TuneConfig) -> int:
    """How many trials a stage creates: num_samples, times each grid_search's length without a searcher."""
    n = tune_config.num_samples
    if tune_config.search_alg is None:
        for value in param_space.values():
            if isinstance(value, dict) and "grid_search" in value:
                n *= len(value["grid_search"])
    return n


def pretrain_config(spec: SweepSpec, method: str, seed: int, dataset: Any) -> PretrainConfig:
    """The PretrainConfig of one (method, seed) of a pretrain sweep on a dataset."""
    return from_dict(PretrainConfig, {**spec.train, "method": method, "seed": seed, "data_root": dataset.root,
                                      "sampling_rate": dataset.sampling_rate})


def pretrained_uri(storage: str, cfg: PretrainConfig, fingerprint: str) -> str:
    """Where a pretraining is published: <storage>/pretrained/<key> (complete once DONE is there)."""
    return _join(storage, "pretrained", pretrain_key(cfg, fingerprint))


def published(uri: str) -> bool:
    """True when a pretraining was published completely (DONE is written last)."""
    return _exists(_join(uri, "DONE"))


def read_published_encoder(uri: str) -> dict[str, Any]:
    """The header of a published encoder_best.pt (weights-only load; a remote one is copied first)."""
    from ssrl.train import HANDED_ON, read_checkpoint

    fs, path = _fs(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return read_checkpoint(Path(path) / HANDED_ON)
    with tempfile.TemporaryDirectory() as tmp:
        with fs.open_input_stream(_join(path, HANDED_ON)) as src, open(Path(tmp) / HANDED_ON, "wb") as dst:
            dst.write(src.read())
        return read_checkpoint(Path(tmp) / HANDED_ON)


def ensure_pretrained(ctx: Context, spec: SweepSpec, methods: tuple[str, ...]) -> list[dict[str, Any]]:
    """Pretrainings {method, seed, uri} in storage: reused when present, else trained now.

    A pretraining that failed (after its retries) comes back as {method, seed, error}, without uri.
    """
    out, todo = [], []
    for method in methods:
        for seed in spec.seeds:
            cfg = pretrain_config(spec, method, seed, ctx.dataset)
            uri = pretrained_uri(ctx.storage, cfg, ctx.dataset.fingerprint)
            if published(uri):
                ctx.say(f"pretraining {method} seed {seed}: reusing {uri}")
                out.append({"method": method, "seed": seed, "uri": uri})
            else:
                todo.append((cfg, uri))
    if todo:
        jobs = {f"{c.method}/seed{c.seed}": (c, uri) for c, uri in todo}
        meta = TrialMeta(sweep="pretrain", stage="pretrain", dataset=ctx.dataset.name,
                         dataset_fingerprint=ctx.dataset.fingerprint, checkpoint_every=spec.resources.checkpoint_every)
        space = grouped_space({g: trial_space(to_dict(c), meta.replace(group=c.method, method=c.method), g)
                               for g, (c, _) in jobs.items()}, {})
        resources = {"cpu": ctx.cpus if ctx.pretrain_cpus is None else ctx.pretrain_cpus,
                     "gpu": ctx.gpus if ctx.pretrain_gpus is None else ctx.pretrain_gpus}
        grid = _tuner(ctx, f"pretrain-{ctx.run_id}", pretrain_trainable, space, resources,
                    tune.TuneConfig(max_concurrent_trials=ctx.max_concurrent, reuse_actors=True), "pretrain")
        for result in grid:
            cfg, uri = jobs[result.config[GROUP]]
            if result.error is not None or result.checkpoint is None or not (result.metrics or {}).get("done"):
                out.append({"method": cfg.method, "seed": cfg.seed, "error": error_line(result)})
                continue
            _publish(result.checkpoint, uri, result.metrics)
            out.append({"method": cfg.method, "seed": cfg.seed, "uri": uri})
    return sorted(out, key=lambda r: (methods.index(r["method"]), spec.seeds.index(r["seed"])))


def error_line(result: Any) -> str:
    """Why a trial failed, in one line (the last line of its error), for results.json."""
    if result.error is None:
        return "did not finish"
    lines = [ln.strip() for ln in str(result.error).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(result.error).__name__)[:300]


def read_metrics(uri: str) -> dict[str, Any]:
    """The final metrics a published pretraining was stored with."""
    fs, path = _fs(uri)
    with fs.open_input_stream(_join(path, "metrics.json")) as f:
        return json.loads(f.read().decode())


def _publish(ckpt: tune.Checkpoint, uri: str, metrics: dict) -> None:
    """Copy a finished pretraining into storage/pretrained/<key>/ and mark it DONE last."""
    def fill(tmp: Path) -> None:
        ckpt.to_directory(str(tmp))
        (tmp / "state.pt").unlink(missing_ok=True)

    _publish_folder(uri, fill, {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})


def _publish_folder(uri: str, fill: Callable[[Path], None], metrics: dict) -> None:
    """A local folder that `fill` writes, with metrics.json, copied to `uri`; DONE written last (published)."""
    fs, path = _fs(uri)
    with tempfile.TemporaryDirectory() as tmp:
        fill(Path(tmp))
        (Path(tmp) / "metrics.json").write_text(json.dumps(metrics, indent=1))
        fs.create_dir(path, recursive=True)
        pafs.copy_files(tmp, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    with fs.open_output_stream(_join(path, "DONE")) as f:
        f.write(b"ok\n")


def publish_external(storage: str, loaded: Any) -> str:
    """An encoder pretrained elsewhere (ssrl.train.external.LoadedExternal) as a published pretraining:
    <storage>/pretrained/external-<name>-<key>/encoder_best.pt with its input contract, DONE last; fine-tuning
    trials on any node fetch it as they fetch a pretraining. The key hashes the file's sha256, the encoder and
    the contract, so a changed file or contract is published afresh and an unchanged one reused."""
    from ssrl.train import HANDED_ON
    from ssrl.train.external import save_external

    record = loaded.record()
    key = _folder_key(f"external-{record['name']}", {k: v for k, v in record.items() if k != "weights"})
    uri = _join(storage, "pretrained", key)
    if not published(uri):
        _publish_folder(uri, lambda tmp: save_external(tmp / HANDED_ON, loaded), {"sha256": record["sha256"]})
    return uri


def _resources(ctx: Context) -> dict[str, float]:
    return {"cpu": ctx.cpus, "gpu": ctx.gpus}


def cell_config(ctx: Context, spec: SweepSpec, cell: Cell, pretrained: dict[str, str], stage: str) -> dict[str, Any]:
    """The trial config of one comparison group at a stage: everything but the seed and the search knobs."""
    ssl = TRACKS[cell.track].init == "ssl"
    external = spec.external(cell.method)
    training = {**spec.training(cell), "data_root": ctx.dataset.root, "sampling_rate": ctx.dataset.sampling_rate}
    meta = TrialMeta(sweep=spec.name, stage=stage, group=cell.group, track=cell.track, fraction=cell.fraction,
                     n_labelled=cell.n_labelled, method=cell.method, dataset=ctx.dataset.name,
                     dataset_fingerprint=ctx.dataset.fingerprint,
                     pretrained_uri=pretrained.get(cell.method, "") if ssl else "",
                     weights_sha256=external.sha256 if ssl and external is not None else "",
                     checkpoint_every=spec.resources.checkpoint_every)
    return trial_space(training, meta, cell.group)


def _seed_meta(meta: dict[str, Any], seed: int, encoders: dict[str, dict[int, str]] | None) -> dict[str, Any]:
    """A group's meta for one seed: its MLflow trial key, and the encoder its method pretrained with that seed."""
    m = TrialMeta.from_dict(meta)
    uri = encoders[m.method][seed] if m.pretrained_uri and encoders and m.method in encoders else m.pretrained_uri
    return m.replace(pretrained_uri=uri, trial_key=f"{m.stage}/{m.group}/seed{seed}").as_dict()


def grouped_space(per_group: dict[str, dict[str, Any]], axes: dict[str, Any],
                  meta: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Tune param space with one trial per group (times the grid ``axes``): each key takes its group's value.

    ``meta(group meta, config)`` may adapt a group's meta to the rest of the trial's config (its seed).
    """
    keys = sorted({k for v in per_group.values() for k in v} - {GROUP, META})
    space: dict[str, Any] = {GROUP: tune.grid_search(list(per_group)), **axes}
    for k in keys:
        space[k] = tune.sample_from(lambda config, k=k: per_group[config[GROUP]].get(k))
    space[META] = tune.sample_from(lambda config: (meta or (lambda m, c: m))(per_group[config[GROUP]][META], config))
    return space


def search(ctx: Context, spec: SweepSpec, pretrained: dict[str, str]) -> dict[str, dict[str, float]]:
    """Optuna TPE per group with one ASHA per group, all in one Tuner; per group the best lr/wd, with the
    validation score behind the choice and the number of trials it was chosen among."""
    s = spec.search
    groups = [{**cell_config(ctx, spec, c, pretrained, "search"), "seed": s.seed, "epochs": s.epochs}
              for c in spec.searched_cells]
    space = {"lr": tune.loguniform(*s.lr), "weight_decay": tune.loguniform(*s.weight_decay)}
    for g in groups:
        g.pop("lr", None)
        g.pop("weight_decay", None)
    searcher = GroupedOptunaSearch(space, groups, s.samples_per_group, metric=METRIC, mode="max", seed=s.seed,
                                   max_concurrent=ctx.max_concurrent)
    scheduler = GroupedASHA(metric=METRIC, mode="max", time_attr="epoch", grace_period=s.grace_period,
                            reduction_factor=s.reduction_factor, max_t=s.epochs)
    grid = _tuner(ctx, f"{spec.name}-{ctx.run_id}-search", finetune_trainable, {}, _resources(ctx),
                tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                num_samples=s.samples_per_group * len(groups), reuse_actors=True), "search")
    best = best_per_group(grid, METRIC, "max")
    return {g: {"lr": float(b["config"]["lr"]), "weight_decay": float(b["config"]["weight_decay"]),
                "val_score": float(b["score"]), "n_trials": int(b["n_trials"])} for g, b in best.items()}


def _settings(chosen: dict[str, Any]) -> dict[str, Any]:
    """The trial settings of a group's search choice (not its score or trial count)."""
    return {k: v for k, v in chosen.items() if k in ("lr", "weight_decay")}


def evaluate(ctx: Context, spec: SweepSpec, pretrained: dict[str, str], chosen: dict[str, dict[str, float]],
             encoders: dict[str, dict[int, str]] | None = None) -> tune.ResultGrid:
    """Every group x seed with its chosen settings and patience early stopping.

    `encoders` (method -> seed -> pretrained uri): each seed's SSL runs fine-tune the encoder its method
    pretrained with that seed.
    """
    per_group = {c.group: {**cell_config(ctx, spec, c, pretrained, "eval"), **_settings(chosen.get(c.group, {}))}
                 for c in spec.cells}
    space = grouped_space(per_group, {"seed": tune.grid_search(list(spec.seeds))},
                          lambda meta, config: _seed_meta(meta, config["seed"], encoders))
    return _tuner(ctx, f"{spec.name}-{ctx.run_id}-eval", finetune_trainable, space, _resources(ctx),
                tune.TuneConfig(max_concurrent_trials=ctx.max_concurrent, reuse_actors=True), "eval")



"""The words of a sweep's console: the header, the summary at the end, and the plan that --dry-run prints."""

from __future__ import annotations

import importlib.metadata
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ssrl.report import results_table_text
from ssrl.tune.options import LaunchOptions, scale_of, specs
from ssrl.tune.spec import SweepSpec
from ssrl.tune.tracking import redact

_W = 8  # width of the left column of the header and summary


def _row(label: str, text: str) -> str:
    return f"{label:<{_W}} {text}"


def shown(path: Path | str, home: bool = True) -> str:
    """A path as the user can type it: relative under the working directory, else ~/... (home=True) or absolute."""
    path = Path(path).resolve()
    bases = [(Path.cwd().resolve(), "")] + ([(Path.home().resolve(), "~/")] if home else [])
    for base, prefix in bases:
        if path.is_relative_to(base) and path != base:
            return prefix + str(path.relative_to(base))
    return str(path)


def store(uri: str) -> str:
    """A tracking URI to show: a sqlite store's path as `shown` gives it, credentials masked."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + shown(uri[len("sqlite:///"):], home=False)  # no ~ inside a URI
    return redact(uri)


def records(root: Path | str, sampling_rate: int) -> int:
    """How many records the data root holds at this rate (metadata and listing only, nothing written)."""
    from ssrl.data.ptbxl import read_ptbxl

    return len(read_ptbxl(root, sampling_rate).meta)


def precision_line(spec: SweepSpec) -> str:
    """'precision auto (bf16 here)': the setting and what it resolves to on this machine's device."""
    from ssrl.train.loop import resolve_device
    from ssrl.train.precision import resolve_precision

    want = str(spec.train.get("precision", "auto"))
    here = resolve_precision(want, resolve_device(str(spec.train.get("device", "auto"))))
    return f"precision {want}" + (f" ({here} here)" if want == "auto" else "")


def header(run: Any) -> str:
    """What runs on what, and where everything goes (run: runner._Checked)."""
    spec, ds = run.spec, run.dataset
    data = f"{shown(ds.root)}: {records(ds.root, ds.sampling_rate)} records at {ds.sampling_rate} Hz; {run.data_how}"
    log = f"{shown(run.log)} (Ray's and Tune's own output; --verbose shows it here)" if run.log else (
        "this console (--verbose)")
    return "\n".join([
        f"ssrl {spec.name} sweep, scale {spec.scale} ({run.scale_why}), run {run.state['run_id']}, "
        f"{precision_line(spec)}",
        _row("data", data),
        _row("results", f"{shown(run.out_dir)}/"),
        _row("logs", log),
        _row("mlflow", f"{store(run.uri)}, experiment ssrl-{spec.name}"),
        *[_row("pretrained" if i == 0 else "", external_line(e.record())) for i, e in enumerate(run.externals)],
    ])


def external_line(record: dict[str, Any]) -> str:
    """One encoder pretrained elsewhere: name, file and sha256, what is built, and its input contract."""
    contract = record["input"]
    kwargs = "".join(f", {k}={v!r}" for k, v in record["kwargs"].items())
    window = f"{contract['seconds']:g} s" if contract["seconds"] else "whole records"
    return (f"{record['name']}: {shown(record['weights'])} sha256 {record['sha256'][:16]}, {record['encoder']}"
            f"(in_leads={len(contract['leads'])}{kwargs}); {contract['sampling_rate']} Hz, {window}, leads "
            f"{','.join(contract['leads'])}, normalise {contract['normalise']}")


def compute(run: Any, cpus: float, gpus: float, pre_cpus: float, pre_gpus: float) -> str:
    """The Ray the sweep runs on and what each trial gets."""
    import ray

    have = ray.cluster_resources()
    where = f"cluster {run.opts.address}" if run.opts.address else "local Ray"
    per = f"{_amount(cpus, gpus)} per trial"
    if run.pre_spec is not None and (pre_cpus, pre_gpus) != (cpus, gpus) and run.spec.kind.evaluates:
        per += f" ({_amount(pre_cpus, pre_gpus)} per pretraining trial)"
    device = "on GPU" if gpus > 0 else "on CPU"
    return _row("compute", f"{where} with {_amount(have.get('CPU', 0), have.get('GPU', 0))}; {per}, {device}")


def _amount(cpus: float, gpus: float) -> str:
    return f"{cpus:g} CPU{'s' if cpus != 1 else ''}, {gpus:g} GPU{'s' if gpus != 1 else ''}"


def ui_page(base: str, experiment_id: str | None) -> str:
    """The MLflow UI page of an experiment's runs, in the model-training view.

    MLflow 3's UI shows an experiment in its GenAI view (traces, token usage) unless its global
    'GenAI | Model training' switch says otherwise; the workflowType parameter sets that switch.
    """
    page = f"#/experiments/{experiment_id}/runs" if experiment_id else "#/experiments"
    return f"{base.rstrip('/')}/{page}?workflowType=machine_learning"


def mlflow_ui_installed() -> bool:
    """Whether this environment can serve the MLflow UI: the full mlflow, not only the mlflow-skinny client."""
    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def mlflow_command(uri: str, experiment_id: str | None = None) -> str:
    """How to open the MLflow UI on this store: the command for a local store, the address of a server."""
    if uri.startswith(("http://", "https://")):
        return f"open {ui_page(redact(uri), experiment_id)}"
    if not mlflow_ui_installed():  # e.g. a GPU node installed from the offline bundle
        cmd = f"mlflow ui --backend-store-uri {shlex.quote(store(uri))}"
        return (f"the UI needs the full mlflow (only its client is here): pip install -e '.[ui]' where pip has an "
                f"index,\n{'':<{_W}} or copy the store to a machine that has it and run there: {cmd}")
    exe = Path(sys.executable).parent / "mlflow"  # the one beside this Python, e.g. .venv/bin/mlflow
    exe_text = shown(exe) if exe.exists() else "mlflow"
    cmd = f"{shlex.quote(exe_text)} ui --backend-store-uri {shlex.quote(store(uri))} --host 127.0.0.1"
    return f"{cmd}\n{'':<{_W}} then open {ui_page('http://127.0.0.1:5000', experiment_id)}"


def summary(results: dict[str, Any], run: Any, experiment_id: str | None) -> str:
    """The results table, what failed, and where results, logs and the MLflow UI are."""
    out_dir = run.out_dir
    n, failed, skipped = results["n_runs"], results["n_failed"], results.get("n_skipped", 0)
    status = f"{n} runs, {failed} failed"
    if failed:
        status += (f" ({skipped} of them skipped)" if skipped else "") + (
            ": each one's reason is under 'failed' in results.json; exit code 1")
    files = [out_dir / "results.json", out_dir / "results.md"]
    if run.spec.kind.plot:
        files.append(out_dir / f"{results['sweep']}.png")
    lines = ["", results_table_text(results).rstrip("\n"), status]
    lines += [_row("results" if i == 0 else "", shown(f)) for i, f in enumerate(files)]
    if run.log:
        lines.append(_row("logs", shown(run.log)))
    lines.append(_row("mlflow", mlflow_command(run.uri, experiment_id)))
    return "\n".join(lines)


def plan(opts: LaunchOptions) -> str:
    """What `launch.py` would do with these options, found without starting Ray or writing a file."""
    scale, why = scale_of(opts)
    spec, pre_spec = specs(opts, scale)
    out_dir = Path(opts.out).expanduser().resolve() / spec.name
    storage = opts.storage or str(out_dir.parent / "ray")
    root, how, fingerprint = _data_plan(opts, spec)
    lines = [f"plan (--dry-run): ssrl {spec.name} sweep, scale {scale} ({why}), {precision_line(spec)}",
             _row("data", f"{shown(root)} ({how})")]
    lines += [_row("pretrained" if i == 0 else "", f"{e.name}: {e.weights} ({e.encoder or 'the encoder it names'}; "
                                                       "loaded and checked before Ray starts)")
              for i, e in enumerate(spec.pretrained)]
    lines += _stage_plan(opts, spec, pre_spec, storage, (root, fingerprint))
    uri = opts.tracking_uri or f"sqlite:///{out_dir.parent / 'mlflow.db'}"
    lines += [_row("results", f"{shown(out_dir)}/ (results.json, results.md, the plot, state.json)"),
              _row("logs", f"{shown(out_dir.parent / 'logs')}/" if not opts.verbose else "the console (--verbose)"),
              _row("storage", f"{shown(storage)} (Ray Tune experiments, checkpoints, pretrained encoders)"),
              _row("mlflow", f"{store(uri)}, experiment ssrl-{spec.name}"),
              "nothing was started and nothing was written; run without --dry-run to start"]
    return "\n".join(lines)


def _data_plan(opts: Any, spec: SweepSpec) -> tuple[Path, str, str | None]:
    """The data root, how it was picked and how many records it holds, and its fingerprint if it exists."""
    from ssrl.data.cache import fingerprint
    from ssrl.data.ptbxl import read_ptbxl
    from ssrl.tune.dataset import locate, real_data_given

    root, how = locate(opts.data_root, spec.data_records, write=False)
    if not real_data_given(opts.data_root) and not (root / "SYNTHETIC").exists():
        return root, f"{how}; {spec.data_records} records written on the first run", None
    table = read_ptbxl(root, opts.sampling_rate)
    return root, f"{how}; {len(table.meta)} records at {opts.sampling_rate} Hz", fingerprint(table)


def _stage_plan(opts: Any, spec: SweepSpec, pre_spec: SweepSpec | None, storage: str,
                data: tuple[Path, str | None]) -> list[str]:
    """One line per stage: its trials, budgets and resources per trial."""
    lines = []
    if pre_spec is not None:
        methods = spec.ssl_methods
        n = len(methods) * len(pre_spec.seeds)
        reused = _reused(opts, pre_spec, methods, storage, data)
        lines.append(_row("pretrain", f"{n} trial{'s' * (n != 1)} ({', '.join(methods)} x seeds "
                                      f"{list(pre_spec.seeds)}), {pre_spec.train.get('epochs', '?')} epochs, "
                                      f"{_resources(opts, pre_spec)} per trial; {reused}"))
    if not spec.kind.evaluates:
        return lines
    groups, searched, s = len(spec.cells), len(spec.searched_cells), spec.search
    if s.enabled:
        lines.append(_row("search", f"{s.samples_per_group * searched} trials ({s.samples_per_group} per group x "
                                    f"{searched} groups), up to {s.epochs} epochs, ASHA grace {s.grace_period} "
                                    f"reduction {s.reduction_factor}, lr {list(s.lr)}, weight_decay "
                                    f"{list(s.weight_decay)}; {_resources(opts, spec)} per trial"))
    else:
        lines.append(_row("search", "off (learning rates fixed per track in the sweep file)"))
    trained = [spec.finetune_config(c) for c in spec.cells]
    lines.append(_row("eval", f"{groups * len(spec.seeds)} trials ({groups} groups x seeds {list(spec.seeds)}), "
                              f"up to {max(t.epochs for t in trained)} epochs, patience "
                              f"{max(t.patience for t in trained)}; {_resources(opts, spec)} per trial"))
    cap = f"at most {opts.max_concurrent} trials at a time" if opts.max_concurrent else "as many trials at a time as fit"
    lines.append(_row("", f"{cap}; a trial is retried {spec.resources.max_failures} times before it counts as failed"))
    return lines


def _resources(opts: Any, spec: SweepSpec) -> str:
    """Resources per trial before Ray is asked what it has."""
    cpus = opts.cpus_per_trial if opts.cpus_per_trial is not None else spec.resources.cpus_per_trial
    if opts.gpus_per_trial is not None:
        return _amount(cpus, opts.gpus_per_trial)
    gpus = spec.resources.gpus_per_trial
    return _amount(cpus, gpus) + (" (0 GPUs where the cluster has none)" if gpus else "")


def _reused(opts: Any, pre_spec: SweepSpec, methods: tuple[str, ...], storage: str,
            data: tuple[Path, str | None]) -> str:
    """Whether the pretraining is already published in the storage (then it is reused, not run)."""
    from ssrl.tune import stages

    root, fingerprint = data
    if fingerprint is None:
        return "runs unless a finished one is in the storage"
    ds = SimpleNamespace(root=str(root), sampling_rate=opts.sampling_rate)
    found = [stages.published(stages.pretrained_uri(storage, stages.pretrain_config(pre_spec, m, s, ds),
                                                    fingerprint)) for m in methods for s in pre_spec.seeds]
    if all(found):
        return "finished before: reused from the storage, not run again"
    return f"{sum(found)} of {len(found)} reused from the storage, the rest run" if any(found) else "runs"

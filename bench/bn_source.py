"""Where a few-shot model's BatchNorm statistics come from, and what that does to its test score.

For every finished evaluation trial of a few-shot sweep whose encoder trained, reload its best
epoch's weights from the trial's last checkpoint and score the test fold with the BatchNorm
statistics taken from three sources, nothing else changed:

- `as_run`: the statistics the trial evaluated with (precise on its labelled subset, or the
  running averages under the reference protocol): reproduces the trial's reported macro-F1;
- `subset`: recomputed exactly on its labelled subset (N records, balanced over the classes);
- `pool`: recomputed exactly on a fixed random sample of the unlabelled pool (folds 1-8, every
  record, no labels read), whose class mix is the data's own.

    python -m bench.bn_source RUN_STORAGE/fewshot-<run id>-eval --json out.json

Needs the trials' checkpoints (the Ray storage of the run) and the data they ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np

from ssrl.config import TRACKS, FinetuneConfig, from_dict
from ssrl.data import pretrain_rows
from ssrl.train.batchnorm import recompute_bn_stats
from ssrl.train.finetuning import predict, prepare
from ssrl.train.loop import LoopState, Signals
from ssrl.train.metrics import singlelabel_metrics
from ssrl.tune.meta import split
from ssrl.tune.trainables import fetch_pretrained

POOL = 2000  # unlabelled pool records the `pool` statistics average over


# Meta keys of trial configs written before meta became TrialMeta (the first editions' runs)
_LEGACY_META = ("sweep", "stage", "group", "cell_track", "cell_fraction", "n_labelled", "dataset",
                "dataset_fingerprint", "pretrained_uri", "checkpoint_every", "trial_key", "method_name")


def _config(trial: Path) -> FinetuneConfig:
    params = json.loads((trial / "params.json").read_text())
    if "meta" in params:
        values, meta = split(params)
        uri = meta.pretrained_uri
    else:
        values, uri = {k: v for k, v in params.items() if k not in _LEGACY_META}, params.get("pretrained_uri")
    if uri:
        values["pretrained"] = fetch_pretrained(uri)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    return from_dict(FinetuneConfig, {k: v for k, v in values.items() if k in fields})


def score_sources(trial: Path, pool_seed: int = 0) -> dict:
    """Test macro-F1 of one trial's best model under each BatchNorm source."""
    cfg = _config(trial)
    state = LoopState.load(max(trial.glob("checkpoint_*")))
    run = prepare(cfg)
    test = run.labels.split("test")
    majority = int(np.bincount(run.labels.split("train").y, minlength=len(run.labels.classes)).argmax())

    def f1() -> float:
        p = predict(run.net, run.sources[2], cfg.eval_batch_size, False, run.precision)
        return singlelabel_metrics(test.y, p, run.labels.classes, majority)["test_macro_f1"]

    run.net.load_state_dict(state.best)
    last = json.loads((trial / "result.json").read_text().strip().splitlines()[-1])
    out = {"group": json.loads((trial / "params.json").read_text())["group"], "seed": cfg.seed,
           "bn_stats": cfg.bn_stats, "reported": last.get("test_macro_f1"), "as_run": f1()}
    recompute_bn_stats(run.net, run.sources[0], cfg.batch_size, run.precision)
    out["subset"] = f1()
    pool = pretrain_rows(run.data)
    rows = np.sort(np.random.default_rng(pool_seed).choice(pool, min(POOL, len(pool)), replace=False))
    recompute_bn_stats(run.net, Signals(run.data, rows, run.device), cfg.batch_size, run.precision)
    out["pool"] = f1()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("eval_dir", type=Path, help="the run storage's fewshot-<run id>-eval folder")
    p.add_argument("--json", type=Path, help="write every trial's scores here")
    p.add_argument("--groups", nargs="*", help="only these groups (e.g. ssl[simclr]@N70 ssl[simclr]@N70:running)")
    args = p.parse_args(argv)
    rows = []
    for trial in sorted(args.eval_dir.glob("finetune_trainable_*")):
        params = json.loads((trial / "params.json").read_text())
        spec = TRACKS.get(params.get("track", ""))
        if spec is None or spec.fit != "sgd" or spec.frozen:  # controls and frozen encoders: no BatchNorm to vary
            continue
        if args.groups and params.get("group") not in args.groups:
            continue
        if not list(trial.glob("checkpoint_*")):
            continue
        rows.append(score_sources(trial))
        print(json.dumps(rows[-1]), flush=True)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    print("| group | seeds | as run | BN on labelled subset | BN on unlabelled pool |\n|---|---|---|---|---|")
    for g, rs in groups.items():
        cols = [statistics.mean(r[k] for r in rs) for k in ("as_run", "subset", "pool")]
        print(f"| {g} | {len(rs)} | " + " | ".join(f"{c:.4f}" for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

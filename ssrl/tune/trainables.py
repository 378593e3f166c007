"""Thin Tune adapters: a trial config (ssrl.tune.meta) in, `tune.report` out; the work happens in ssrl.train."""

from __future__ import annotations

import math
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from filelock import FileLock
from ray import tune

from ssrl.config import FinetuneConfig, PretrainConfig, from_dict
from ssrl.train import HANDED_ON, finetune, pretrain
from ssrl.tune import raycompat
from ssrl.tune.meta import split

METRIC = "val_score"  # what ASHA and the search judge a fine-tuning trial by


# Text results a trial reports beside its numbers (what it ran at, for results.json and MLflow).
TEXT_KEYS = ("precision",)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """Numbers (and the TEXT_KEYS) only, NaN kept out of the way of schedulers (None values dropped)."""
    out = {}
    for k, v in metrics.items():
        if k in TEXT_KEYS and isinstance(v, str):
            out[k] = v
        elif isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (int, float)):
            out[k] = v
    return out


class NewestCheckpoint:
    """Trainable mixin: restore from the trial's next checkpoint when the recorded one is gone.

    Tune deletes a trial's previous checkpoint when it registers a new one (num_to_keep) and saves
    the experiment state just after. A driver killed in between leaves that state naming the deleted
    checkpoint, and Tune would fail the trial on --resume. The next checkpoint in the trial's folder
    was registered, so it is complete: the trial continues from it.
    """

    def restore(self, checkpoint_path: Any) -> Any:
        """Trainable.restore, with a missing checkpoint replaced by the next one on storage."""
        ckpt = raycompat.restored_checkpoint(checkpoint_path)
        newer = _next_checkpoint(ckpt) if ckpt is not None else None
        if newer is not None:
            checkpoint_path = raycompat.with_checkpoint(checkpoint_path, newer)
        return super().restore(checkpoint_path)


def _next_checkpoint(ckpt: tune.Checkpoint) -> tune.Checkpoint | None:
    """The oldest checkpoint_* after ckpt in its trial folder, when ckpt no longer exists."""
    fs, path = ckpt.filesystem, ckpt.path.rstrip("/")
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        return None
    parent, name = posixpath.split(path)
    later = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
                   if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") and i.base_name > name)
    return tune.Checkpoint(posixpath.join(parent, later[0]), filesystem=fs) if later else None


def resilient(trainable: Callable) -> Callable:
    """The function trainable with NewestCheckpoint mixed into the class Tune wraps it in."""
    return raycompat.add_mixins(trainable, NewestCheckpoint)


def _restore(work: Path) -> None:
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # a retried or moved trial continues from its last checkpoint
        ckpt.to_directory(str(work))


def fetch_pretrained(uri: str) -> str:
    """A local copy of a pretrained encoder from the run storage (once per node, under a lock).

    The copy lands in a temporary folder that is renamed into place, so a copy cut short (a node
    lost mid-download) is never taken for a complete one.
    """
    key = uri.rstrip("/").replace("://", "_").replace("/", "_")[-150:]
    local = Path(tempfile.gettempdir()) / "ssrl-pretrained" / key
    local.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(local) + ".lock"):
        if not (local / HANDED_ON).exists():
            partial = local.with_name(f".{key}.{os.getpid()}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            tune.Checkpoint(uri).to_directory(str(partial))
            shutil.rmtree(local, ignore_errors=True)
            partial.rename(local)
    return str(local / HANDED_ON)


def _node_id() -> str:
    """The Ray node this trial runs on (reported with every result: shows where trials ran)."""
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests calling the trainable directly)
        return ""


def _reporter(work: Path, every: int):
    node = _node_id()

    def report(metrics: dict[str, Any]) -> None:
        epoch = int(metrics.get("epoch", 0))
        keep = metrics.get("done") or (every and epoch % every == 0)
        ckpt = tune.Checkpoint.from_directory(str(work)) if keep else None
        tune.report({**_clean(metrics), "node_id": node}, checkpoint=ckpt)

    return report


def finetune_trainable(config: dict[str, Any]) -> None:
    """One fine-tuning trial: (track, fraction or N, seed) -> per-epoch and final reports."""
    values, meta = split(config)
    if meta.pretrained_uri:
        values["pretrained"] = fetch_pretrained(meta.pretrained_uri)
    cfg = from_dict(FinetuneConfig, values)
    with tempfile.TemporaryDirectory(prefix="ssrl-trial-") as tmp:  # checkpoints persist via tune.report
        work = Path(tmp)
        _restore(work)
        _apply_threads()
        finetune(cfg, _reporter(work, meta.checkpoint_every), work)


def pretrain_trainable(config: dict[str, Any]) -> None:
    """One pretraining trial; its checkpoints carry encoder_best.pt and encoder_last.pt."""
    values, meta = split(config)
    cfg = from_dict(PretrainConfig, values)
    with tempfile.TemporaryDirectory(prefix="ssrl-pretrain-") as tmp:
        work = Path(tmp)
        _restore(work)
        _apply_threads()
        report = _reporter(work, meta.checkpoint_every)
        final = pretrain(cfg, lambda m: report({**m, "done": m.get("epoch") == cfg.epochs}), work)
    if not math.isfinite(final.get("train_loss", 0.0)):
        raise RuntimeError("pretraining ended with a non-finite loss")


def _apply_threads() -> None:
    """Use the CPUs Tune gave this trial for intra-op parallelism."""
    import torch

    n = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)

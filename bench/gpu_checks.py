"""The checks of the GPU code paths: run by bench.gpu on a lent machine (no pytest there) and by pytest.

Each check takes a Ctx and returns what it measured, raising AssertionError when the path is wrong.
`CUDA_ONLY` checks compare the device path with the CPU one and need CUDA; the others run on any
device (on CPU at bf16 forced, so that the autocast path runs in the CPU tests too).
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ssrl.augment import build_augment
from ssrl.config import FinetuneConfig, PretrainConfig
from ssrl.data import ECGData, pretrain_rows, task_labels
from ssrl.models import build_encoder, build_head
from ssrl.train import finetune, load_encoder, pretrain
from ssrl.train.finetuning import Classifier, predict
from ssrl.train.loop import CPU_EVAL_BATCH, Signals, eval_batch_size
from ssrl.train.precision import autocast, resolve_precision

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Ctx:
    """Where the checks run: the device, the opened data and a folder for their outputs."""

    device: torch.device
    data: ECGData
    work_dir: Path

    @property
    def precision(self) -> str:
        """What a run at precision 'auto' trains at here; bf16 forced on CPU so that its path runs."""
        return resolve_precision("auto", self.device) if self.device.type == "cuda" else "bf16"

    def where(self) -> dict:
        """The data and device settings of a run config."""
        return {"data_root": str(self.data.root), "cache_dir": str(self.data.cache_path.parent),
                "device": str(self.device), "precision": self.precision}


def _batch(ctx: Ctx, n: int = 256) -> tuple[Signals, torch.Tensor]:
    """Signals of the first n pool rows on the device, and an index batch of up to 128 of them."""
    sig = Signals(ctx.data, pretrain_rows(ctx.data)[:n], ctx.device)
    return sig, torch.randperm(len(sig), generator=torch.Generator().manual_seed(0))[:128]


def _classifier(ctx: Ctx) -> Classifier:
    """A seeded cnn6 (width 16) with a linear head, on the device, in eval mode."""
    torch.manual_seed(0)
    enc = build_encoder("cnn6", in_leads=12, width=16)
    return Classifier(enc, build_head("linear", enc.out_dim, 5), frozen=False).to(ctx.device).eval()


def resident_signals(ctx: Ctx) -> dict:
    """On CUDA the rows live on the device as float16, and batches equal the CPU path's."""
    n, t = 512, ctx.data.signals.shape[2]
    before = torch.cuda.memory_allocated(ctx.device)
    sig, idx = _batch(ctx, n)
    grown = torch.cuda.memory_allocated(ctx.device) - before
    assert grown >= n * 12 * t * 2, f"rows not resident: {grown} bytes allocated for {n} records"
    x = sig.get(idx)
    ref = Signals(ctx.data, pretrain_rows(ctx.data)[:n], CPU).get(idx)
    diff = (x.cpu() - ref).abs().max().item()
    assert x.device.type == "cuda" and diff <= 1e-5, f"device batch differs from the CPU one by {diff}"
    return {"resident_mib": round(grown / 2**20, 1), "max_abs_diff": diff}


def autocast_bf16(ctx: Ctx) -> dict:
    """Under the run's autocast the convolutions run in bf16 and the logits stay within 5 % of fp32."""
    model, (sig, idx) = _classifier(ctx), _batch(ctx)
    seen: list[torch.dtype] = []
    conv = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv1d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = sig.get(idx)
    with torch.no_grad():
        ref = model(x).float()
        with autocast(ctx.device, ctx.precision):
            low = model(x).float()
    rel = ((low - ref).abs().max() / ref.abs().max()).item()
    assert ctx.precision == "bf16", f"precision auto resolves to {ctx.precision} on {ctx.device}"
    assert seen == [torch.float32, torch.bfloat16], f"conv output dtypes {seen}"
    assert rel < 0.05, f"bf16 logits differ from fp32 by {rel:.3f} of their range"
    return {"precision": ctx.precision, "max_rel_diff": round(rel, 4)}


def eval_batches(ctx: Ctx) -> dict:
    """Evaluation keeps 1,024-record batches on CUDA (CPU_EVAL_BATCH on CPU) with the same outputs as small ones."""
    size = eval_batch_size(1024, ctx.device)
    assert size == (1024 if ctx.device.type == "cuda" else CPU_EVAL_BATCH), f"eval batch {size} on {ctx.device}"
    model, (sig, _) = _classifier(ctx), _batch(ctx, 2048)
    t0 = time.perf_counter()
    big = predict(model, sig, 1024, True, ctx.precision)
    t1 = time.perf_counter()
    small = predict(model, sig, 32, True, ctx.precision)
    diff = float(abs(big - small).max())
    assert big.shape == (len(sig), 5) and diff < 2e-2, f"probabilities differ by {diff} across eval batch sizes"
    return {"eval_batch": size, "max_abs_diff": round(diff, 5), "records_per_s": round(len(sig) / (t1 - t0))}


def finetune_same_seed(ctx: Ctx) -> dict:
    """Two fine-tuning runs with one seed on the device give the same numbers, at the run's precision."""
    n_train = len(task_labels(ctx.data, "superdiagnostic").split("train"))
    cfg = FinetuneConfig(**ctx.where(), encoder_width=8, epochs=2, patience=2, batch_size=64, seed=7,
                         fraction=min(1.0, 2000 / n_train))
    runs = [[], []]
    finals = [finetune(cfg, runs[i].append, None) for i in range(2)]
    losses = [r["train_loss"] for r in runs[0] if not r.get("done")]
    assert finals[0]["precision"] == ctx.precision, f"trained at {finals[0]['precision']}"
    assert all(math.isfinite(v) for v in losses), f"losses {losses}"
    same = json.dumps(runs[0], sort_keys=True) == json.dumps(runs[1], sort_keys=True)  # NaN equals NaN here
    assert same, "same seed, different numbers"
    return {"precision": finals[0]["precision"], "test_macro_auroc": round(finals[0]["test_macro_auroc"], 4),
            "n_labelled_used": finals[0]["n_labelled_used"]}


def pretrain_then_probe(ctx: Ctx) -> dict:
    """A pretraining on the device saves an encoder that loads on CPU and fine-tunes frozen on the device."""
    out = ctx.work_dir / "pretrain_then_probe"
    cfg = PretrainConfig(**ctx.where(), encoder_width=8, epochs=1, batch_size=64, max_pool=512, probe_every=1,
                         probe_size=200)
    rows: list[dict] = []
    final = pretrain(cfg, rows.append, out)
    enc = load_encoder(final["checkpoint"], expect="cnn6", expect_kwargs={"width": 8})
    pool = pretrain_rows(ctx.data)[:4]
    h = enc.eval()(Signals(ctx.data, pool, CPU).get(torch.arange(len(pool))))  # (4, 12, T) -> (4, D)
    probe = finetune(FinetuneConfig(**ctx.where(), track="ssl_frozen", pretrained=final["checkpoint"],
                                    encoder_width=8, epochs=2, patience=2, fraction=0.5), lambda r: None, None)
    assert rows[0]["precision"] == ctx.precision and math.isfinite(rows[0]["train_loss"]), f"first epoch {rows[0]}"
    assert next(enc.parameters()).device == CPU and torch.isfinite(h).all(), "the encoder does not load on CPU"
    assert probe["precision"] == "fp32" and 0.0 <= probe["test_macro_auroc"] <= 1.0, f"frozen probe {probe}"
    return {"probe_score": rows[0].get("probe_score"), "frozen_auroc": round(probe["test_macro_auroc"], 4)}


def augment_on_device(ctx: Ctx) -> dict:
    """Augmentation keeps device and dtype, and one CUDA generator seed gives one output (half inputs too)."""
    sig, idx = _batch(ctx)
    x = sig.get(idx)
    aug = build_augment("strong", 100)
    for inp in (x, x.half()):
        a = aug(inp, torch.Generator(device=ctx.device).manual_seed(0))
        b = aug(inp, torch.Generator(device=ctx.device).manual_seed(0))
        assert a.device == inp.device and a.dtype == inp.dtype and torch.equal(a, b), f"{inp.dtype} not reproduced"
    assert aug(x, torch.Generator().manual_seed(0)).device == x.device, "a CPU generator moved the data"
    return {"shape": list(x.shape)}


CHECKS: dict[str, Callable[[Ctx], dict]] = {
    "resident_signals": resident_signals, "autocast_bf16": autocast_bf16, "eval_batches": eval_batches,
    "finetune_same_seed": finetune_same_seed, "pretrain_then_probe": pretrain_then_probe,
    "augment_on_device": augment_on_device,
}
CUDA_ONLY = ("resident_signals", "augment_on_device")


def run_checks(ctx: Ctx) -> dict:
    """Every check that can run on ctx.device: passed, failed (with the reason), skipped, and what each measured."""
    out: dict = {"passed": [], "failed": {}, "skipped": {}, "details": {}}
    for name, check in CHECKS.items():
        if name in CUDA_ONLY and ctx.device.type != "cuda":
            out["skipped"][name] = "needs CUDA"
            continue
        t0 = time.perf_counter()
        try:
            out["details"][name] = {**check(ctx), "wall_s": round(time.perf_counter() - t0, 2)}
            out["passed"].append(name)
        except Exception as e:  # noqa: BLE001 - every check is reported, a failing one included
            out["failed"][name] = f"{type(e).__name__}: {e}"[:300]
            out["details"][name] = {"traceback": traceback.format_exc(limit=3)[-1500:]}
    return out

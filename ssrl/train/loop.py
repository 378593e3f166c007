"""The one epoch loop both run kinds share: seeding, batching, early stopping, resumable state."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssrl.atomic import atomic_open
from ssrl.data import ECGData
from ssrl.train.step import adamw

Report = Callable[[dict[str, Any]], None]
STATE_FILE = "state.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run cannot go on."""


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; other names are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, make cuDNN deterministic, and return a CPU generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


class Signals:
    """Standardised rows of the signal cache, batches taken by index.

    Resident (the default on CUDA) keeps the rows on the device as one float16 tensor; otherwise
    (the default on CPU) each batch is read straight from the memory-mapped cache.
    """

    def __init__(self, data: ECGData, rows: np.ndarray, device: torch.device, resident: bool | None = None) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.device = device
        self._mean = torch.as_tensor(data.mean, device=device).view(1, -1, 1)  # (1, 12, 1)
        self._std = torch.as_tensor(data.std, device=device).view(1, -1, 1)
        self._src = data.signals
        self._resident = None
        if device.type == "cuda" if resident is None else resident:  # (n, 12, T) float16 on the device, read once
            self._resident = torch.from_numpy(np.ascontiguousarray(data.signals[self.rows])).to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """Standardised float32 batch for positions idx into these rows: (B,) -> (B, 12, T)."""
        if self._resident is not None:
            x = self._resident[idx.to(self.device)].float()
        else:
            pos = idx.numpy()
            order = np.argsort(self.rows[pos], kind="stable")  # sequential memmap reads
            x = np.empty((len(pos),) + self._src.shape[1:], dtype=np.float32)
            x[order] = self._src[self.rows[pos][order]]
            x = torch.from_numpy(x)
        return (x - self._mean) / self._std


# On CPU, forward passes over more than a few hundred records fall out of cache: cnn6 evaluates 1,024
# records 1.4x (width 16) to 1.7x (width 64) slower in one batch of 1,024 than in batches of 64-128,
# with bitwise the same outputs (docs/RESULTS.md, performance). Accelerators keep the configured size.
CPU_EVAL_BATCH = 128


def eval_batch_size(batch_size: int, device: torch.device) -> int:
    """Batch size for no-grad evaluation on device: as configured, but at most CPU_EVAL_BATCH on CPU."""
    return min(batch_size, CPU_EVAL_BATCH) if device.type == "cpu" else batch_size


def batch_indices(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Shuffled (gen given) or ordered index batches; a trailing batch of one is dropped for BatchNorm."""
    perm = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        b = perm[start : start + batch_size]
        if len(b) == 1 and n > 1 and gen is not None:
            continue
        yield b


@dataclass
class EarlyStopping:
    """Tracks the best validation value (higher is better) and the epochs since it."""

    patience: int
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once `patience` epochs passed without improvement."""
        return self.bad_epochs >= self.patience


# Reading a value off the device waits for it (a host sync: on CUDA the queue of kernels drains), so an epoch's
# losses are summed on the device and read every CHECK_EVERY steps and at the end of the epoch: a loss that
# turns NaN or infinite raises at most CHECK_EVERY - 1 steps later.
CHECK_EVERY = 16


class EpochLoss:
    """An epoch's loss sum, kept on the device in float64 and read every `every` steps and at the end.

    float64 on the device gives bitwise the Python sum of loss.item() values the loops kept before; the sum
    is non-finite once any loss was, so it is all that is read.
    """

    def __init__(self, epoch: int, every: int | None = None) -> None:
        self.epoch, self.every = epoch, every or CHECK_EVERY
        self.total: torch.Tensor | None = None  # () float64 on the loss's device
        self.weight, self.steps, self.checked = 0, 0, 0  # summed weight, steps added, steps read and finite

    def add(self, loss: torch.Tensor, weight: int = 1) -> None:
        """Add weight x loss (a scalar tensor, left on its device); read the sum every `every` steps."""
        if self.total is None:
            self.total = torch.zeros((), dtype=torch.float64, device=loss.device)
        self.total.add_(loss.detach().double() * weight)
        self.weight, self.steps = self.weight + weight, self.steps + 1
        if self.steps % self.every == 0:
            self.check()

    def check(self) -> float:
        """The sum so far (one host sync); TrainingDiverged if a loss of this epoch was NaN or infinite."""
        total = 0.0 if self.total is None else self.total.item()
        if not math.isfinite(total):
            raise TrainingDiverged(f"loss became {total} in epoch {self.epoch} (steps {self.checked + 1}-"
                                   f"{self.steps}); lower the learning rate")
        self.checked = self.steps
        return total

    def mean(self) -> float:
        """The weighted mean loss of the epoch, checked."""
        return self.check() / max(self.weight, 1)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of a module's weights and buffers on CPU (never a reference)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in copy.deepcopy(module.state_dict()).items()}


@dataclass
class LoopState:
    """What a run needs to continue after a crash: weights, optimiser, RNG, stopper, best weights."""

    epoch: int
    model: dict
    optimizer: dict
    scheduler: dict
    generator: list  # [data-order state, augmentation state]
    stopper: dict
    best: dict | None
    history: list

    def save(self, state_dir: Path) -> None:
        """Write atomically (temp file + rename) so a crash never leaves a torn state."""
        state_dir.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(asdict(self), state_dir / STATE_FILE)

    @staticmethod
    def load(state_dir: Path | None) -> LoopState | None:
        """The saved state in state_dir, or None when there is none."""
        if state_dir is None or not (state_dir / STATE_FILE).exists():
            return None
        return LoopState(**torch.load(state_dir / STATE_FILE, map_location="cpu", weights_only=True))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through the atomic writer: the previous file stays loadable until the new one is whole."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


@dataclass
class Fitted:
    """What fit() ends with: the last epoch that ran, the best snapshot (fine-tuning) and every epoch's row."""

    epoch: int
    best: dict | None
    history: list


EpochStep = Callable[[torch.optim.Optimizer, "tuple[torch.Generator, torch.Generator]", int], dict[str, Any]]
AfterEpoch = Callable[[int, dict[str, Any], "dict | None"], "dict | None"]


def fit(module: nn.Module, params: list[nn.Parameter], budget: tuple[float, float, int], gens: tuple[torch.Generator,
        torch.Generator], step: EpochStep, after: AfterEpoch, report: Report, out_dir: Path | None,
        stopper: EarlyStopping | None = None) -> Fitted:
    """The epoch loop of every run: AdamW with a cosine schedule over `budget` = (lr, weight_decay, epochs).

    Per epoch: `step(opt, gens, epoch)` trains and returns the row's fields (train_loss, ...); the row gets
    the epoch's learning rate; the schedule steps; `after(epoch, row, best)` validates or probes, adds to the
    row and returns the best snapshot so far; the state is saved to out_dir (resumable after a crash) and the
    row reported. With a stopper the loop ends early after its patience; after the loop, `epoch` is the last
    epoch that ran. gens = (data order, augmentation) generators, restored on resume as the module is.
    """
    lr, weight_decay, epochs = budget
    opt = adamw(params, lr, weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    epoch, best, history = 0, None, []
    state = LoopState.load(out_dir)
    if state is not None:  # resume after a crash or a node loss
        module.load_state_dict(state.model)
        opt.load_state_dict(state.optimizer)
        sched.load_state_dict(state.scheduler)
        gens[0].set_state(state.generator[0])
        gens[1].set_state(state.generator[1].to(gens[1].get_state().device))
        if stopper is not None:
            vars(stopper).update(state.stopper)
        epoch, best, history = state.epoch, state.best, state.history
    while epoch < epochs and not (stopper is not None and stopper.should_stop):
        epoch += 1
        row = {"epoch": epoch, **step(opt, gens, epoch), "lr": opt.param_groups[0]["lr"]}
        sched.step()
        best = after(epoch, row, best)
        history.append(row)
        if out_dir is not None:
            LoopState(epoch, module.state_dict(), opt.state_dict(), sched.state_dict(),
                      [gens[0].get_state(), gens[1].get_state().cpu()], vars(stopper) if stopper else {}, best,
                      history).save(out_dir)
        report(row)
    return Fitted(epoch, best, history)

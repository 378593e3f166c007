"""One optimiser step without launch overhead: a compiled forward and loss, AdamW, the FLOPs a step costs.

`compile` (a training setting): `on` wraps a step's forward and loss (the model and its loss; the optimiser
step stays outside) in torch.compile with static shapes; on CUDA in mode "reduce-overhead", which replays
the forward and the backward as CUDA graphs (one launch each instead of hundreds of kernels). A trailing
partial batch is the same size every epoch, so it compiles once, as its own graph, not every epoch.
`auto` compiles on CUDA only. On a 2-core CPU the first compile of the demo's cnn6 SimCLR step (forward and
backward, cold inductor cache) took 44 CPU s, 38 s wall, for a step 10 % faster per CPU second after it; the
fine-tuning step 21 CPU s for 7 % (docs/RESULTS.md section 16): more than a demo trial wins back.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssrl.config import COMPILES

LossOf = Callable[..., torch.Tensor]  # (*inputs) -> fp32 scalar loss


@functools.cache
def cpu_compiler() -> str | None:
    """The C++ compiler torch's inductor builds CPU kernels with, or None where there is none."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception:  # noqa: BLE001 - torch raises its own error type, or the private helper moved
        return shutil.which("g++") or shutil.which("c++")


def resolve_compile(name: str, device: torch.device) -> bool:
    """Whether a run with setting `name` compiles its step on `device` ('auto': on CUDA only)."""
    if name not in COMPILES:
        raise ValueError(f"compile {name!r} is unknown; use one of {', '.join(COMPILES)}")
    if name == "auto":
        return device.type == "cuda"
    if name == "on" and device.type == "cpu" and cpu_compiler() is None:
        raise RuntimeError("compile: on needs a C++ compiler on CPU (torch's inductor builds kernels with it); "
                           "install g++ or set compile: off")
    return name == "on"


def compile_step(loss_of: LossOf, device: torch.device, enabled: bool) -> LossOf:
    """loss_of itself, or loss_of under torch.compile with static shapes (CUDA graphs on CUDA)."""
    if not enabled:
        return loss_of
    if device.type != "cuda":
        return torch.compile(loss_of, dynamic=False)
    graphed = torch.compile(loss_of, dynamic=False, mode="reduce-overhead")

    def step(*inputs: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last step's graph outputs are done with
        return graphed(*inputs)

    return step


def train_step(opt: torch.optim.Optimizer, loss_of: LossOf, *inputs: torch.Tensor) -> torch.Tensor:
    """One optimiser step on loss_of(*inputs); returns the loss, detached and left on the device (no sync)."""
    loss = loss_of(*inputs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW for every run: fused on CUDA (one kernel for all parameters); torch's default elsewhere.

    The optimiser step is never inside a CUDA graph (compile_step graphs the forward and backward only), so
    `capturable` is not needed. On CPU fused AdamW is not bitwise torch's default (1e-7 apart after 3 steps,
    measured), and runs must keep their numbers, so CPU keeps the default.
    """
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def step_flops(loss_of: LossOf, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward and backward of loss_of(*inputs) as torch's FlopCounterMode counts them.

    It counts matrix products and convolutions (a multiply-add is 2 FLOPs), not elementwise work, norms or
    the optimiser. The step really runs: gradients accumulate and BatchNorm statistics move.
    """
    with FlopCounterMode(display=False) as counter:
        loss_of(*inputs).backward()
    return int(counter.get_total_flops())

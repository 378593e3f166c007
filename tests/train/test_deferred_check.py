"""The loss is read off the device every CHECK_EVERY steps, not every step: a NaN still stops the run, soon."""

from __future__ import annotations

import math

import pytest
import torch

from ssrl.ssl.methods import SimCLR
from ssrl.train import TrainingDiverged, loop, pretrain
from ssrl.train.loop import EpochLoss


def _feed(losses: list[float], every: int, epoch: int = 3) -> int:
    """Add the losses one step at a time; the step (1-based) at which EpochLoss raised, or 0 if it never did."""
    acc = EpochLoss(epoch, every)
    for step, value in enumerate(losses, 1):
        try:
            acc.add(torch.tensor(value, dtype=torch.float32))
        except TrainingDiverged:
            return step
    try:
        acc.mean()
    except TrainingDiverged:
        return len(losses) + 1  # at the end of the epoch
    return 0


@pytest.mark.parametrize("bad_step", [1, 3, 4, 5, 11])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_raises_within_every_steps(bad, bad_step):
    every, n = 4, 12
    losses = [0.5 + 0.01 * i for i in range(n)]
    losses[bad_step - 1] = bad
    raised = _feed(losses, every)
    assert raised, "a non-finite loss went unnoticed"
    assert bad_step <= raised < bad_step + every  # read at the next multiple of `every`, never later


def test_a_non_finite_loss_in_the_last_unread_steps_raises_at_the_end_of_the_epoch():
    losses = [0.5] * 6 + [math.nan]  # steps 5-7 are never read by the every-4 check
    assert _feed(losses, every=4) == len(losses) + 1


def test_the_message_names_the_value_the_epoch_and_the_steps():
    acc = EpochLoss(epoch=7, every=4)
    for value in (0.3, 0.2, math.nan):
        acc.add(torch.tensor(value))
    with pytest.raises(TrainingDiverged, match=r"^loss became nan in epoch 7 \(steps 1-3\); lower the learning rate$"):
        acc.mean()


def test_finite_losses_raise_nothing_and_the_mean_is_the_python_sum_bitwise():
    """float64 on the device gives exactly what sum(loss.item() * weight) / total weight gave before."""
    gen = torch.Generator().manual_seed(0)
    losses = (torch.rand(37, generator=gen) * 5).tolist()
    weights = [int(w) for w in torch.randint(1, 64, (37,), generator=gen)]
    acc = EpochLoss(epoch=1, every=4)
    total = 0.0
    for value, w in zip(losses, weights):
        loss = torch.tensor(value, dtype=torch.float32)
        acc.add(loss, weight=w)
        total += loss.item() * w
    assert acc.mean() == total / sum(weights)
    assert EpochLoss(epoch=1).mean() == 0.0  # an epoch without steps


@pytest.mark.parametrize(("bad_step", "raised_after"), [(2, 2), (3, 4), (5, 5)])
def test_a_pretraining_whose_loss_turns_nan_stops_within_every_steps(pt_cfg, tmp_path, monkeypatch, bad_step,
                                                                      raised_after):
    """5 steps per epoch, read every 2: a NaN at step 3 is seen after step 4, one at step 5 at the epoch's end."""
    monkeypatch.setattr(loop, "CHECK_EVERY", 2)
    calls, real = [], SimCLR.loss

    def loss(self, x1, x2):
        calls.append(len(calls) + 1)
        out = real(self, x1, x2)
        return out * math.nan if len(calls) == bad_step else out

    monkeypatch.setattr(SimCLR, "loss", loss)
    cfg = pt_cfg(max_pool=160, batch_size=32, epochs=2, probe_every=0)
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 1 \(steps \d-\d\); lower the learning"):
        pretrain(cfg, lambda row: None, tmp_path)
    assert len(calls) == raised_after  # no step ran after the read that saw it

"""What a person sees while a sweep runs: a few lines of header, one live progress line per stage, a line
per failed trial, and the summary. Ray's and Tune's own output goes to a log file instead (`session`).

On a terminal the progress line is a tqdm bar redrawn in place; anywhere else (CI, `| tee`, a file) it
is a plain line at most every PLAIN_EVERY_S seconds, and nothing printed holds a control character.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback
from tqdm import tqdm

from ssrl.tune.meta import split
from ssrl.tune.tracking import error_text

PLAIN_EVERY_S = 30.0  # not a terminal: at most one progress line this often
_BAR_EVERY_S = 0.5  # a terminal: redraw the bar at most this often
BAR_FORMAT = "{desc} {bar:16} {n}/{total} [{elapsed}<{remaining}]"  # the stage's counts follow (`_draw`)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")

_CURRENT: Console | None = None  # the console of the sweep running in this process (see `current`)


def plain(text: str) -> str:
    """`text` without ANSI escape sequences or other control characters (newlines and tabs kept)."""
    return _ANSI.sub("", text)


class Console:
    """Where the sweep's own lines go: the terminal (or whatever stdout was) when the sweep started."""

    def __init__(self, stream: TextIO, tty: bool | None = None, every_s: float = PLAIN_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.tty = _isatty(stream) if tty is None else tty
        self.bars: list[tqdm] = []

    def say(self, text: str = "") -> None:
        """Print lines (above a live bar, which is redrawn below them)."""
        if self.tty and self.bars:
            tqdm.write(text, file=self.stream)
        else:
            print(text if self.tty else plain(text), file=self.stream, flush=True)

    def bar(self, stage: str, total: int, initial: int) -> tqdm:
        """A live progress bar for a stage on a terminal (closed by `close_bars` at the latest)."""
        bar = tqdm(total=total, initial=initial, desc=f"{stage:<8}", unit="trial", file=self.stream, leave=True,
                   dynamic_ncols=True, mininterval=_BAR_EVERY_S, bar_format=BAR_FORMAT)
        self.bars.append(bar)
        return bar

    def close_bars(self) -> None:
        """Leave every live bar as a finished line."""
        for bar in self.bars:
            bar.close()
        self.bars.clear()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def current() -> Console:
    """The console of the running sweep; outside one, a console on sys.stdout."""
    return _CURRENT if _CURRENT is not None else Console(sys.stdout)


@contextmanager
def session(log: Path | None, discard_on: tuple[type[BaseException], ...] = ()) -> Iterator[Console]:
    """Within the block, this process's stdout and stderr write to `log`; the Console yielded writes to
    where stdout went before.

    Both the file descriptors 1 and 2 (C++ core messages, child processes) and sys.stdout/sys.stderr
    (Tune's status tables, warnings, the trial workers' output that Ray streams to the driver) are
    redirected. log=None (--verbose) redirects nothing: everything stays on the console. A log this
    session created is removed again when the block raises one of `discard_on` (bad input writes nothing).
    """
    global _CURRENT
    previous = _CURRENT
    if log is None:
        _CURRENT = Console(sys.stdout)
        try:
            yield _CURRENT
        finally:
            _CURRENT.close_bars()
            _CURRENT = previous
        return
    new = [p for p in (log.parent, log) if not p.exists()]
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds, saved_sys = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    stream = os.fdopen(os.dup(saved_fds[0]), "w", buffering=1, encoding="utf-8", errors="replace")
    with log.open("a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    # Left open afterwards: a logging handler made inside the block may still hold one (it writes to the log).
    sys.stdout, sys.stderr = (os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
                              for fd in (1, 2))
    _CURRENT = Console(stream)
    try:
        yield _CURRENT
    except discard_on:
        for path in reversed(new):
            path.unlink() if path.is_file() else path.rmdir()
        raise
    finally:
        _CURRENT.close_bars()
        _CURRENT = previous
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved_sys
        for fd, saved in zip((1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        stream.close()


def counts(trials: list, total: int) -> dict[str, int]:
    """Trials done / running / pending / failed of the total (pending includes those not yet created).

    A trial Tune ended before its first report (an interrupt ends the trials it had given an actor)
    is not done.
    """
    done = sum(t.status == "TERMINATED" and getattr(t, "last_result", None) != {} for t in trials)
    failed = sum(t.status == "ERROR" for t in trials)
    running = sum(t.status in ("RUNNING", "PAUSED") for t in trials)
    total = max(total, len(trials))
    return {"done": done, "running": running, "pending": total - done - failed - running, "failed": failed,
            "total": total}


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def trial_label(stage: str, trial: Any) -> str:
    """'eval ssl_finetune[simclr]@0.25 seed 42' (a pretraining: 'pretrain simclr seed 0')."""
    training, meta = split(trial.config)
    return f"{stage} {meta.group or trial.trial_id} seed {training.get('seed', '?')}"


def error_path(trial: Any) -> str:
    """Where the trial's full error (every attempt's traceback) is kept in the run storage."""
    try:
        fs = trial.storage.storage_filesystem
        path = f"{trial.path}/error.txt"
        return path if fs.type_name == "local" else f"{fs.type_name}://{path}"
    except AttributeError:
        return str(getattr(trial, "error_file", None) or "the trial's folder in the run storage")


def failure_line(stage: str, trial: Any) -> str:
    """One line for a failed trial: which one, the last line of its error, where the whole error is."""
    reason = error_text(trial)
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    return f"FAILED {trial_label(stage, trial)}: {reason} (traceback: {error_path(trial)})"


class Progress(Callback):
    """Tune callback on the driver: a stage's live progress line, its failed trials, its best scores.

    The line counts trials done / running / pending / failed of the total, the time spent and an
    estimate of the rest (from the trials this invocation finished). With a metric (searches) it adds
    the best value so far per group. Like TrialLogger it pickles as its settings only, and prints to
    the console of the sweep that is running when Tune restores it.
    """

    def __init__(self, stage: str, metric: str | None = None) -> None:
        self.stage, self.metric = stage, metric
        self.total, self.best = 0, {}
        self._start: float | None = None
        self._initial: int | None = None
        self._shown = -math.inf
        self._bar: tqdm | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"stage": self.stage, "metric": self.metric}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, stop: Any = None, num_samples: Any = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        """Learn how many trials the stage will run."""
        self.total = int(total_num_samples or 0)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Redraw the bar (a terminal) or print a line (else, every PLAIN_EVERY_S seconds)."""
        self._show(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Keep the best value of the metric per group."""
        value = result.get(self.metric) if self.metric else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            group = split(trial.config)[1].group or self.stage
            self.best[group] = max(value, self.best.get(group, -math.inf))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial failed for good (after its retries): one line."""
        current().say(failure_line(self.stage, trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The stage's last line: what finished, what failed, how long it took."""
        self._show(trials, final=True)

    def _show(self, trials: list, final: bool = False) -> None:
        con = current()
        c = counts(trials, self.total)
        now = con.clock()
        if self._start is None:
            self._start, self._initial = now, c["done"] + c["failed"]
        if con.tty:
            self._draw(con, c, final)
        elif final or now - self._shown >= con.every_s:
            self._shown = now
            con.say(self.line(c, now - self._start, final))

    def _draw(self, con: Console, c: dict[str, int], final: bool) -> None:
        if self._bar is None:
            self._bar = con.bar(self.stage, c["total"], self._initial or 0)
        bar = self._bar
        bar.total, bar.n = c["total"], c["done"] + c["failed"]
        bar.bar_format = BAR_FORMAT + " " + self._details(c).replace("{", "{{").replace("}", "}}")
        if final:
            bar.refresh()
            bar.close()
            con.bars.remove(bar)
            self._bar = None
        elif con.clock() - self._shown >= _BAR_EVERY_S:
            self._shown = con.clock()
            bar.refresh()

    def _details(self, c: dict[str, int]) -> str:
        text = f"{c['done']} done, {c['running']} running, {c['pending']} pending, {c['failed']} failed"
        if self.best:
            text += "; best " + ", ".join(f"{g} {v:.3f}" for g, v in sorted(self.best.items()))
        return text

    def line(self, c: dict[str, int], elapsed: float, final: bool = False) -> str:
        """The plain progress line: 'eval: 5 done, 2 running, 9 pending, 0 failed of 16; 1m02s, ~3m left'."""
        finished = c["done"] + c["failed"]
        if final:
            when = f"in {duration(elapsed)}"
        else:
            new = finished - (self._initial or 0)
            left = f"~{duration(elapsed * (c['total'] - finished) / new)} left" if new > 0 else "time left unknown yet"
            when = f"{duration(elapsed)} so far, {left}"
        head, _, best = self._details(c).partition("; ")
        return f"{self.stage}: {head} of {c['total']}; {when}" + (f"; {best}" if best else "")

"""How long a training will take on this device, said before most of it runs; asked about when long.

`LongRunCheck` times a few of the training loop's own first iterations (no extra work: the
measured rate includes batch sampling and decoding on this device), then logs the projected
time of the remaining ones.  Above ``ask_above_s`` (30 minutes) it warns, naming the key that
sets the amount of work, and, when the run is interactive (stdin and stderr are a terminal, one
process), asks whether to go on: an answer other than yes stops the run with a one-line error
before it commits the hours (``profile=paper`` on a CPU: 100,000 MultiBox iterations).  Tests,
sweeps, cluster jobs and DDP runs only get the warning.  A "yes" is remembered per stage for the
rest of the process (six members are asked about once).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from detect.errors import UserError

log = logging.getLogger(__name__)

ASK_ABOVE_S = 30 * 60.0
TIMED = 3  # iterations timed after the first one (the first pays for allocations and lazy set-up)

# Stage name (as the training loops call themselves) -> the key that sets its amount of work.
WORK_KEYS = {
    "classifier": "classifier.train.iterations",
    "classifier (roi)": "classifier.train.iterations",
    "pretrain": "pretrain.train.epochs",
    "multibox": "proposals.multibox.iterations",
}

_CONFIRMED: set[str] = set()


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def interactive() -> bool:
    """A person can answer: stdin and stderr are terminals."""
    try:
        return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class LongRunCheck:
    """Call ``after_iteration(done)`` after each iteration of a loop running ``start .. iterations - 1``.

    ``device``: where it runs (for the message).  ``can_ask``: False where nobody can answer or a
    stop would strand other processes (DDP).  ``ask``: reads the answer (``input`` on a terminal by
    default).  ``ask_above_s``: the projected time above which it warns and asks (`ASK_ABOVE_S`).
    """

    def __init__(self, name: str, *, start: int, iterations: int, device: str = "", can_ask: bool = True,
                 ask_above_s: float | None = None, timed: int = TIMED,
                 ask: Callable[[str], str] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name, self.start, self.iterations, self.device = name, start, iterations, device
        self.can_ask, self.timed = can_ask, timed
        self.ask_above_s = ASK_ABOVE_S if ask_above_s is None else ask_above_s
        self.ask, self.clock = ask, clock
        self.estimate_s: float | None = None
        self._t0: float | None = None
        self._done = iterations - start <= 1 + timed  # too short to be worth a measurement

    def after_iteration(self, done: int) -> None:
        if self._done:
            return
        if done == self.start + 1:
            self._t0 = self.clock()
            return
        if done < self.start + 1 + self.timed or self._t0 is None:
            return
        self._done = True
        per_iteration = (self.clock() - self._t0) / (done - self.start - 1)
        self.estimate_s = per_iteration * (self.iterations - done)
        self._report(done, per_iteration)

    def _report(self, done: int, per_iteration: float) -> None:
        where = f" on {self.device}" if self.device else ""
        left = self.iterations - done
        what = (f"{self.name}: {left:,} iterations to go at {per_iteration:.3g} s each{where}: "
                f"about {format_duration(self.estimate_s)}")
        if self.estimate_s <= self.ask_above_s:
            log.info("%s", what)
            return
        key = WORK_KEYS.get(self.name)
        log.warning("%s. Less work: %s, a smaller profile (profile=demo or cpu_real on a CPU) or a GPU "
                    "(device=cuda)", what, f"lower {key}" if key else "fewer iterations")
        if not (self.can_ask and (self.ask is not None or interactive())) or self.name in _CONFIRMED:
            return
        answer = (self.ask or _input)(f"{what}. Continue? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            _CONFIRMED.add(self.name)
            return
        raise UserError(f"{self.name}: stopped at your request after iteration {done} of {self.iterations:,} "
                        f"(the rest would take about {format_duration(self.estimate_s)}{where}); "
                        f"a rerun resumes from the last checkpoint")


def _input(prompt: str) -> str:
    print(file=sys.stderr)  # below the progress bar
    try:
        return input(prompt)
    except EOFError:
        return ""


__all__ = ["ASK_ABOVE_S", "LongRunCheck", "format_duration", "interactive"]

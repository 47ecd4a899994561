"""Run ``python -m detect.run`` and SIGKILL it at a chosen point inside one stage.

    python tests/kill_at.py STAGE [detect.run overrides ...]

The process kills itself with SIGKILL (no cleanup, no ``finally`` blocks, no atexit: what
a pre-empted cluster job or the OOM killer does) right after the point named by STAGE:

- ``multibox``: MultiBox training wrote its first checkpoint;
- ``proposals``: proposal extraction wrote its first cache chunk;
- ``train``: the first ensemble member wrote its first training checkpoint;
- ``score``: the first member's val scores are cached, the second member's scoring starts;
- ``eval``: ``detections.txt`` is written, the evaluation starts (no ``metrics.json`` yet).

Only the function at that point is wrapped (in this process), so everything else runs
the production code unchanged.  Used by ``tests/test_kill_resume.py``.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from typing import Any, Callable


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after_first_call(module: Any, name: str) -> None:
    real: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        _kill()
        return result

    setattr(module, name, wrapper)


def _at_call(module: Any, name: str, number: int) -> None:
    real: Callable[..., Any] = getattr(module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == number:
            _kill()
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


def install(stage: str) -> None:
    if stage == "multibox":
        import proposals.multibox_train as target
        _after_first_call(target, "save_checkpoint")
    elif stage == "proposals":
        from proposals.cache import ProposalCache
        _after_first_call(ProposalCache, "write_chunk")
    elif stage == "train":
        import classifier.train as target
        _after_first_call(target, "save_training_state")
    elif stage == "score":
        import detect.member_pool as target  # run_member scores every member, in this process or a worker's
        _at_call(target, "score_member", 2)
    elif stage == "eval":
        import detect.pipeline as target
        _at_call(target, "evaluate_detections", 1)
    else:
        raise SystemExit(f"unknown stage {stage!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["detect.run", *sys.argv[2:]]
    runpy.run_module("detect.run", run_name="__main__", alter_sys=True)

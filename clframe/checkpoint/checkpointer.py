"""The checkpointing plugin and the signal handler that turns SIGTERM/SIGINT into a clean stop."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

import clframe
from clframe.checkpoint.files import FORMAT, atomic_save, check_plain, checkpoint_dir, checkpoint_name, prune, rng_state
from clframe.core.hooks import Plugin
from clframe.errors import CheckpointError, RunInterrupted
from clframe.run.distributed import all_reduce_max, rank, world_size


class StopRequest:
    """While active, SIGTERM and SIGINT only ask the run to stop at the end of the current step
    (where a checkpoint is consistent); a second SIGINT stops at once. The previous handlers
    come back on exit. A no-op outside the main thread, where handlers cannot be set."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: stopping after this step with a checkpoint "
              "(press Ctrl-C again to stop at once, without one).", file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def install(self) -> None:
        """Take the signals back from handlers set since ``__enter__``. Lightning's own SIGTERM handler
        broadcasts across ranks inside the handler, which can pair with another collective and hang
        a multi-process run; here the ranks agree on stopping between two steps instead."""
        if self._previous and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


class Checkpointer(Plugin):
    """Write checkpoints every ``every`` steps, at experience ends, and on a stop request: the last
    of a run's plugins, so a checkpoint holds what every other plugin did at that step.

    Saving flushes the monitors (so a recorded curve is complete) but not the pending loss terms,
    so a checkpoint changes nothing that the run logs. A checkpoint is written only after the
    pending loss terms and the parameters are checked to be finite. On a resume, ``setup`` puts the
    module, the strategies and the RNGs back at the checkpoint (``resume_state``).

    Args:
        run_dir: the run directory; files go to ``<run_dir>/checkpoints/``.
        config: the resolved run config, stored to check a resume against.
        every: also save every this many optimizer steps (None: only at experience ends).
        at_experience_end: save after each experience (default True).
        keep: newest checkpoints kept on disk (default 2).
        recorder: the run recorder whose rows go into the checkpoint (default None).
        stop: the signal-driven stop request to honour (default None).
        enabled: save periodically and at experience ends (default True); a stop request is
            honoured with a checkpoint regardless.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        every: int | None = None,
        at_experience_end: bool = True,
        keep: int = 2,
        recorder: Any = None,
        stop: StopRequest | None = None,
        enabled: bool = True,
    ) -> None:
        self.run_dir, self.config = Path(run_dir), config
        self.every, self.at_experience_end, self.keep = every, at_experience_end, keep
        self.recorder, self.stop, self.enabled = recorder, stop, enabled
        self.resume_state: dict[str, Any] | None = None
        self.last_path: Path | None = None
        self.save_times: list[float] = []
        self._saved_key: tuple | None = None

    # -- saving ----------------------------------------------------------------------------------
    def state(self, module: Any) -> dict[str, Any]:
        """The checkpoint of ``module``'s run as it stands."""
        module.check_finite()  # never keep a diverged state
        training = module.training_state()
        # the monitors first: a flush sends their pending rows to the recorder, whose state follows
        monitors = {k: m.state_dict() for k, m in module.monitors.items()}
        parts = [*(("strategy", k, s) for k, s in training["strategies"].items()),
                 *(("monitor", k, s) for k, s in monitors.items())]
        for kind, key, s in parts:
            try:
                check_plain(s, f"{kind} '{key}' state_dict()")
            except TypeError as e:
                raise TypeError(f"{e}: a checkpoint holds only tensors and plain containers (dict, list, tuple, "
                                "str, int, float, bool, None) so that it loads with torch.load(weights_only=True); "
                                "store plain state instead (e.g. generator.get_state()).") from None
        return {
            "format": FORMAT, "clframe": clframe.__version__, "step": module.cl_step,
            "experience": module.current_exp, "finished": module.finished, "world_size": world_size(),
            "rank": rank(),
            "config": self.config, "module": training, "rng": rng_state(), "monitors": monitors,
            "recorder": None if self.recorder is None else self.recorder.state_dict(),
        }

    def save(self, module: Any) -> Path:
        """Write a checkpoint now (once per distinct training state) and prune old ones."""
        key = (module.cl_step, module.current_exp, module.exp_ended)
        if key == self._saved_key and self.last_path is not None:
            return self.last_path
        start = time.perf_counter()
        path = checkpoint_dir(self.run_dir) / checkpoint_name(module.cl_step, rank(), world_size())
        atomic_save(self.state(module), path)
        prune(self.run_dir, self.keep, rank() if world_size() > 1 else None)
        self.save_times.append(time.perf_counter() - start)
        self._saved_key, self.last_path = key, path
        return path

    # -- events ----------------------------------------------------------------------------------
    def setup(self, module: Any) -> None:
        if self.stop is not None:
            self.stop.install()
        if self.resume_state is not None:
            from clframe.checkpoint.files import set_rng_state

            if self.resume_state.get("rank", 0) != rank():
                raise CheckpointError(f"rank {rank()} was given the checkpoint of rank {self.resume_state['rank']}; "
                                      "resume with the same launcher and process layout.")
            module.load_training_state(self.resume_state["module"])
            self._saved_key = (module.cl_step, module.current_exp, module.exp_ended)
            set_rng_state(self.resume_state["rng"])  # last: nothing may draw from the RNGs after this
            self.resume_state = None

    def on_boundary_eval(self, module: Any, experience: int, rows: list[dict[str, Any]]) -> None:
        if self.enabled and self.at_experience_end:
            self.save(module)

    def on_step_end(self, ctx: Any) -> None:
        module = ctx.module
        if self.enabled and self.every and module.cl_step % self.every == 0:
            self.save(module)
        if self.stop is None:
            return
        signum = self.stop.signum
        if world_size() > 1:
            # every rank stops at the same step: agree on the largest signal number any rank got
            # (one tiny all-reduce per step; Lightning's DDP already syncs once per step itself)
            flag = torch.tensor([signum or 0], device=module.device)
            signum = int(all_reduce_max(flag)) or None
        if signum is not None:
            raise RunInterrupted(signum, str(self.save(module)), str(self.run_dir))

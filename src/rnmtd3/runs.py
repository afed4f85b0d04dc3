"""Foreground runs (`rnm train`): an output folder checked before anything is written, and a clean Ctrl-C."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Callable

import torch

from .config import RunConfig
from .folders import prepare_out_dir
from .resources import spare_cores
from .sinks import FileSink
from .trainer import TrainResult, require_device, train


def train_foreground(config: RunConfig, out: Path, threads: int = 1,
                     on_progress: Callable[[int, float], None] | None = None,
                     on_eval: Callable[[int, float], None] | None = None,
                     on_note: Callable[[str], None] | None = None,
                     on_stop: Callable[[int], None] | None = None) -> TrainResult:
    """Train in this process into `out`, which is created only once the device and folder are known to work;
    SIGINT/SIGTERM ask for a checkpoint at the next episode boundary, then return; `on_stop` hears which signal
    asked, so that a caller can exit as a shell expects of that signal."""
    require_device(config.device)
    run_dir = prepare_out_dir(out)
    torch.set_num_threads(threads)
    stop = {"asked": False}

    def ask_stop(signum, frame):  # noqa: ARG001 - signal handler signature
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        if on_stop is not None:
            on_stop(signum)

    sink = FileSink(run_dir, on_progress=on_progress, on_eval=on_eval, should_stop=lambda: stop["asked"],
                    on_note=on_note)
    previous = {sig: signal.signal(sig, ask_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return train(config, run_dir, sink, background_eval=spare_cores(1, threads))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

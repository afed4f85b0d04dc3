"""`rnm eval`: roll out a saved actor and print its return."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from rnmtd3.methods import Method

from .common import DbOption, err


def eval_run(
    run: str = typer.Argument(..., metavar="RUN", help="a run id of the database, or a folder (or its checkpoint.pt) "
                                                      "from `rnm train`"),
    episodes: Optional[int] = typer.Option(None, help="episodes to roll out (default: the run's eval_episodes)"),
    seed: Optional[int] = typer.Option(None, help="seed of the first reset (default: the evaluation protocol's, the "
                                                  "run's seed + 100, which gives back its last evaluation)"),
    video: Optional[Path] = typer.Option(None, help="record each episode as an MP4 into this folder (needs moviepy "
                                                    "and a MuJoCo renderer that works without a display)"),
    db: Optional[str] = DbOption,
) -> None:
    """Roll out a saved actor and print its return.

    Noise-free episodes; prints the mean ± std of the return. The episodes follow the evaluation protocol, so a finished run's checkpoint with the default seed and episodes
    reproduces its last recorded evaluation."""
    from rnmtd3.rollout import checkpoint_of, rollout  # torch loads here only

    source = checkpoint_of(run, db)
    result = rollout(source, episodes, seed, video)
    config, returns = result.config, result.returns
    sys.stdout.write(f"{returns.mean():.2f} ± {returns.std():.2f}\n")
    method = Method.of_config(config.to_dict()).label()
    err.print(f"return over {len(returns)} episode(s) from seed {result.seed}: {config.env} {method} seed "
              f"{config.seed} at step {result.step:,} ({source.path})", soft_wrap=True, markup=False,
              highlight=False)
    if result.device != config.device:
        err.print(f"rolled out on {result.device}: the run trained on {config.device}, which this machine lacks, "
                  "so returns can differ from its recorded ones in the last digits", soft_wrap=True, markup=False,
                  highlight=False)
    if video is not None:
        err.print(f"videos written to {video}", soft_wrap=True, markup=False, highlight=False)

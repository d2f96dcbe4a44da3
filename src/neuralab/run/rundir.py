"""Where a run lives: its directory, named once, never overwritten."""

from __future__ import annotations

import time
from pathlib import Path

from neuralab.checkpoint.format import CheckpointError, read_json
from neuralab.run.tracking import write_text_atomic


def new_run_dir(out: str | None, data_name: str, model_name: str, config_text: str) -> Path:
    """Create the run directory (`out`, or runs/<data>-<model>-<time>) and write its
    config.yaml; refuse to overwrite an earlier run."""
    if out:
        run_dir = Path(out).expanduser()
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{data_name.split(':')[0]}-{model_name}-{stamp}"
    if (run_dir / "checkpoint").exists() or (run_dir / "metrics.json").exists():
        raise FileExistsError(
            f"run directory {run_dir} already holds a run; choose another "
            "--out or delete it first (nothing was overwritten)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", config_text)
    return run_dir


def last_good(run_dir: Path) -> str:
    """Where the last good weights are after a failed run (nothing bad is ever saved)."""
    try:  # meta.json alone: no need to hash and read the weights for one number
        epoch = read_json(run_dir / "checkpoint" / "meta.json")["epoch"]
    except CheckpointError:
        return f"No epoch completed, so {run_dir} holds no checkpoint."
    return f"The last good checkpoint is {run_dir / 'checkpoint'} (epoch {epoch})."

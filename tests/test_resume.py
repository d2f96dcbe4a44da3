"""Resume: a run killed with SIGKILL in the middle of an epoch, resumed from its last
checkpoint, ends with exactly the weights and history of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import neuralab
from neuralab import api
from neuralab.checkpoint import format as checkpoint
from neuralab.cli import main as cli
from neuralab.run import tracking
from neuralab.train import trainer as trainer_module
from neuralab.train.callbacks import Callback

pytest.importorskip("sklearn")  # the digits dataset ships with scikit-learn

# Dropout, augmentation, a one-cycle schedule, momentum and EMA: every kind of state that
# resuming must restore. One thread and fixed precision/layout: nothing left to timing.
ARGS = {"data": "digits", "model": "mlp", "epochs": 4, "batch_size": 64, "seed": 3}
OVERRIDES = [
    "model.args.width=32",
    "model.args.dropout=0.3",
    "augment.crop_padding=1",
    "optim.name=sgd",
    "optim.momentum=0.9",
    "schedule.name=onecycle",
    "train.ema_decay=0.9",
    "train.threads=1",
    "train.precision=fp32",
    "train.channels_last=off",
]
STEPS_PER_EPOCH = 23  # digits: 1437 training images / 64, rounded up
KILL_AT_STEP = 2 * STEPS_PER_EPOCH + 7  # in the middle of the third epoch

KILLED_RUN = """
import os, signal, neuralab
from neuralab.train.callbacks import Callback

class KillMidEpoch(Callback):
    def on_step_end(self, trainer):
        if trainer.step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

neuralab.train(**{args}, out={out!r}, overrides={overrides!r}, verbose=False,
               callbacks=[KillMidEpoch()])
"""


def without_timing(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "examples_per_second")}
        for row in history
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "whole"
    neuralab.train(**ARGS, out=str(out), overrides=OVERRIDES, verbose=False)
    return out


def test_sigkilled_run_resumes_to_identical_weights_and_history(
    uninterrupted: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    script = KILLED_RUN.format(step=KILL_AT_STEP, args=ARGS, out=str(out), overrides=OVERRIDES)
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=False)
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    saved = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in saved] == [1, 2]  # the third epoch was lost mid-way
    assert not (out / "metrics.json").exists()

    run = neuralab.resume(out, verbose=False)

    assert run.metrics["epochs"] == 4
    resumed = load_file(out / "checkpoint" / "model.safetensors")
    whole = load_file(uninterrupted / "checkpoint" / "model.safetensors")
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert torch.equal(resumed[name], whole[name]), f"{name} differs after resuming"
    resumed_history = json.loads((out / "history.json").read_text())
    whole_history = json.loads((uninterrupted / "history.json").read_text())
    assert without_timing(resumed_history) == without_timing(whole_history)
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(
        json.loads((uninterrupted / "metrics.json").read_text())["accuracy"], abs=0
    )


def test_finished_runs_and_runs_without_a_checkpoint_are_refused(
    uninterrupted: Path, tmp_path: Path
) -> None:
    with pytest.raises(FileExistsError, match="finished run"):
        neuralab.resume(uninterrupted)
    with pytest.raises(FileNotFoundError, match="config.yaml is missing"):
        neuralab.resume(tmp_path)


def test_cli_resume_refuses_config_flags(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["train", "--resume", "auto", "--epochs", "3"]) != 0
    assert "--epochs" in capsys.readouterr().err


def test_resume_auto_without_unfinished_runs_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--resume", "auto"]) != 0
    assert "no unfinished run" in capsys.readouterr().err


# --- The crash matrix: SIGKILL at 20 points, then resume; every run ends as if never killed. ---

# Validation, the best checkpoint and two kept epochs: every file a run writes is in play.
MATRIX_OVERRIDES = [*OVERRIDES, "data.val_split=0.2", "monitor.keep_epochs=2"]
MATRIX_STEPS = 18  # digits with 20% held out: 1150 training images / 64, rounded up


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(function, count: int, when=lambda *args: True, before: bool = False):
    """`function`, except that the `count`-th call whose arguments satisfy `when` kills the
    process (right before or right after that call)."""
    calls = [0]

    def wrapped(*args, **kwargs):
        chosen = when(*args)
        calls[0] += chosen
        if chosen and before and calls[0] == count:
            kill_now()
        result = function(*args, **kwargs)
        if chosen and calls[0] == count:
            kill_now()
        return result

    return wrapped


def kill_between_renames(count: int):
    """checkpoint.replace_folder for `checkpoint/`, killed on its `count`-th call after moving
    the old checkpoint aside and before renaming the new one in: the narrowest window."""
    real, calls = checkpoint.replace_folder, [0]

    def replace_folder(staging: Path, directory: Path) -> None:
        calls[0] += directory.name == "checkpoint"
        if directory.name == "checkpoint" and calls[0] == count:
            os.replace(directory, directory.with_name(f".{directory.name}.old"))
            kill_now()
        real(staging, directory)

    return replace_folder


def kill_half_written(name: str, count: int):
    """tracking's atomic text writer, killed with the `count`-th `name` half written to its
    temporary file (not yet renamed over the real one)."""
    real, calls = tracking.write_text_atomic, [0]

    def write_text_atomic(path: Path, text: str) -> None:
        calls[0] += path.name == name
        if path.name == name and calls[0] == count:
            path.with_name(f".{path.name}.tmp").write_text(text[: len(text) // 2])
            kill_now()
        real(path, text)

    return write_text_atomic


class KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.step:
            kill_now()


def staged(folder: str, file: str = ""):
    """Matches save_file/write_manifest calls that write into `folder`'s staging copy."""
    return lambda *args: f"/.{folder}." in str(args[-1]) and str(args[-1]).endswith(file)


# name → (what to break in the child process, how many matching calls before it breaks)
KILL_POINTS = {
    **{
        f"mid-epoch, after step {step}": ("step", step)
        for step in (1, 9, MATRIX_STEPS, MATRIX_STEPS + 1, 27, 2 * MATRIX_STEPS + 5, 60, 67)
    },
    **{f"during validation of epoch {epoch}": ("validation", epoch) for epoch in (1, 2, 4)},
    "epoch 1 checkpoint: weights written, training state not yet": ("checkpoint weights", 1),
    "epoch 3 checkpoint: training state written, manifest not yet": ("training state", 3),
    "epoch 1 best/: weights written, manifest not yet": ("best weights", 1),
    "epoch 2 checkpoint: complete but for its manifest": ("checkpoint manifest", 2),
    "epoch 2 checkpoint: old one moved aside, new one not renamed in": ("renames", 2),
    "epoch 4 (last) checkpoint: between the renames": ("renames", 4),
    "history.json of epoch 3 half-written, not renamed": ("history.json", 3),
    "between the epoch 3 checkpoint and its kept-epoch snapshot": ("snapshot", 3),
    "metrics.json half-written after the last epoch": ("metrics.json", 1),
}


def break_child(kind: str, count: int) -> list[Callback]:
    """Install the kill point in this (child) process; returns callbacks to train with."""
    if kind == "step":
        return [KillAtStep(count)]
    if kind == "validation":  # one score_loader call per epoch's validation
        trainer_module.score_loader = kill_on_call(trainer_module.score_loader, count)
    elif kind in ("checkpoint weights", "training state", "best weights"):
        folder = "best" if kind == "best weights" else "checkpoint"
        file = "training.safetensors" if kind == "training state" else "model.safetensors"
        checkpoint.save_file = kill_on_call(checkpoint.save_file, count, staged(folder, file))
    elif kind == "checkpoint manifest":
        checkpoint.write_manifest = kill_on_call(
            checkpoint.write_manifest, count, staged("checkpoint"), before=True
        )
    elif kind == "renames":
        checkpoint.replace_folder = kill_between_renames(count)
    elif kind in ("history.json", "metrics.json"):
        api.write_text_atomic = tracking.write_text_atomic = kill_half_written(kind, count)
    elif kind == "snapshot":
        tracking.keep_epoch_snapshot = kill_on_call(
            tracking.keep_epoch_snapshot, count, before=True
        )
    return []


def train_and_kill(out: Path, kind: str, count: int) -> int:
    """Train in a forked child that kills itself at the kill point; returns its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            callbacks = break_child(kind, count)
            neuralab.train(
                **ARGS,
                out=str(out),
                overrides=MATRIX_OVERRIDES,
                verbose=False,
                callbacks=callbacks,
            )
        finally:
            os._exit(3)  # the kill point was never reached
    return os.waitpid(pid, 0)[1]


def run_files(run: Path) -> dict[str, object]:
    """Everything that must match between a resumed and an uninterrupted run."""
    files: dict[str, object] = {
        "history": without_timing(json.loads((run / "history.json").read_text())),
        "accuracy": json.loads((run / "metrics.json").read_text())["accuracy"],
    }
    for folder in ("checkpoint", "best", "epochs/epoch-0003", "epochs/epoch-0004"):
        files[folder] = load_file(run / folder / "model.safetensors")
    files["epochs"] = sorted(p.name for p in (run / "epochs").iterdir())
    return files


def assert_same_run(resumed: dict, whole: dict, where: str) -> None:
    for key, expected in whole.items():
        if isinstance(expected, dict) and key != "history":
            for name, tensor in expected.items():
                assert torch.equal(resumed[key][name], tensor), f"{where}: {key}/{name} differs"
        else:
            assert resumed[key] == expected, f"{where}: {key} differs"


@pytest.fixture(scope="module")
def uninterrupted_matrix_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("matrix") / "whole"
    neuralab.train(**ARGS, out=str(out), overrides=MATRIX_OVERRIDES, verbose=False)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    return run_files(out)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash matrix forks (POSIX only)")
def test_sigkill_at_twenty_points_then_resume_auto_equals_an_uninterrupted_run(
    uninterrupted_matrix_run: dict, tmp_path: Path, monkeypatch, fault_table
) -> None:
    monkeypatch.chdir(tmp_path)  # --resume auto looks under ./runs
    assert len(KILL_POINTS) == 20
    for index, (name, (kind, count)) in enumerate(KILL_POINTS.items()):
        out = tmp_path / "runs" / f"kill-{index:02d}"
        status = train_and_kill(out, kind, count)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, name
        assert not (out / "metrics.json").exists(), name
        assert cli.main(["train", "--resume", "auto", "--progress", "none"]) == 0, name
        assert_same_run(run_files(out), uninterrupted_matrix_run, name)
    fault_table(
        "SIGKILL mid-epoch (8), during validation (3), during checkpoint writes (6), "
        "during history/snapshot/metrics writes (3), then `--resume auto`",
        len(KILL_POINTS),
        "every resume succeeded from the last complete checkpoint; final weights, best/, "
        "kept epochs, history and test accuracy equal an uninterrupted run's bit for bit",
    )

"""Resume: a run killed with SIGKILL in the middle of an epoch, resumed from its last
checkpoint, ends with exactly the weights and history of a run that was never interrupted."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import neuralab
from neuralab import cli

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
from neuralab.callbacks import Callback

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

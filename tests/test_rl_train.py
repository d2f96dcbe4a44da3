"""The agent's loop end to end on tiny environments (tests/rl_envs.py): it learns, stores the
final observation of an episode with the right bootstrap, reproduces a run from its seed,
resumes after a SIGKILL with its replay buffer, and refuses bad input with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import neuralab
from neuralab.checkpoint.format import load_training_state, read_json
from neuralab.cli.main import main
from neuralab.config.rl import resolve_rl_config
from neuralab.errors import ConfigError
from neuralab.rl import EnvError

TESTS = Path(__file__).parent
BANDIT = "rl_envs:NeuralabTest/Bandit-v0"  # the user's-own-environment form: module:id
QUIET = ["train.progress=none", "train.tensorboard=false"]
BANDIT_SETTINGS = [
    *QUIET,
    "agent.hidden=[16]",
    "replay.capacity=5000",
    "replay.batch_size=32",
    "replay.learning_starts=100",
    "optim.lr=0.01",
    "optim.train_freq=1",
    "optim.target_update=50",
    "explore.fraction=0.5",
    "train.eval_every=300",
    "train.eval_episodes=20",
    "train.final_episodes=50",
]


def quiet(_: str) -> None:
    """Swallow the run's log lines."""


def bandit_run(tmp_path: Path, name: str, steps: int = 900, extra: list[str] = (), **kw):
    return neuralab.rl.train(
        env=BANDIT, steps=steps, out=str(tmp_path / name), overrides=[*BANDIT_SETTINGS, *extra],
        log=quiet, **kw,
    )  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [
            "agent.dueling=true",
            "agent.n_step=2",
            "replay.prioritized=true",
            "env.num_envs=3",
            "env.vectorization=async",
        ],
    ],
    ids=["plain", "dueling-nstep-prioritized-async-vector"],
)
def test_dqn_learns_the_bandit(tmp_path: Path, extra: list[str]) -> None:
    run = bandit_run(tmp_path, "bandit", extra=extra)
    final = run.metrics["final"]
    assert final["episodes"] == 50 and final["return_mean"] == 1.0  # random play scores 0.5
    assert run.metrics["steps"] >= 900
    history = json.loads((run.run_dir / "history.json").read_text())
    assert [row["step"] for row in history][:2] == [300, 600]
    assert (run.run_dir / "best" / "manifest.json").is_file()
    assert (run.run_dir / "episodes.csv").read_text().count("\n") == run.metrics["episodes"] + 1
    # The saved metrics are what the verb returned; `evaluate` rescoring agrees.
    assert json.loads((run.run_dir / "metrics.json").read_text()) == run.metrics
    assert neuralab.rl.evaluate(run.run_dir, episodes=20)["return_mean"] == 1.0


@pytest.mark.parametrize("num_envs", [1, 2])  # one environment alone, or Gymnasium's vector
@pytest.mark.parametrize(
    "env_id, bootstrap", [("NeuralabTest/Counter-v0", 0.9), ("NeuralabTest/Fall-v0", 0.0)]
)
def test_episode_ends_store_the_final_observation(tmp_path, env_id, bootstrap, num_envs) -> None:
    """A time limit (Counter, 4 steps) bootstraps from the last observation; termination
    (Fall, at t=3) does not. The stored next observation is the episode's last, never the
    next episode's first."""
    import rl_envs  # noqa: F401  (registers the environments in this process)

    run = neuralab.rl.train(
        env=env_id, steps=48, num_envs=num_envs, out=str(tmp_path / "run"), log=quiet,
        overrides=[*QUIET, "env.max_episode_steps=4", "agent.gamma=0.9",
                   "replay.learning_starts=1000", "train.final_episodes=0"],
    )  # fmt: skip
    buffer = load_training_state(run.run_dir / "checkpoint")["buffer"]
    obs, next_obs = buffer["obs"].squeeze(1), buffer["next_obs"].squeeze(1)
    last = 3.0 if bootstrap == 0.0 else 4.0  # the final observation's step number
    ends = next_obs == last
    assert ends.sum() == 48 // last  # one per episode
    assert torch.all(buffer["bootstrap"][ends] == bootstrap)
    torch.testing.assert_close(buffer["bootstrap"][~ends], torch.full(((~ends).sum(),), 0.9))
    assert torch.all(next_obs == obs + 1)  # never a reset observation


def test_progress_bar_and_plain_lines(tmp_path: Path, capsys) -> None:
    for mode in ("bar", "plain"):
        bandit_run(tmp_path, mode, steps=600, extra=[f"train.progress={mode}"])
        out = capsys.readouterr().out
        assert out.count("eval return") == 2 and "step 600/600" in out  # one line per evaluation


def test_a_seed_reproduces_a_run(tmp_path: Path) -> None:
    first = bandit_run(tmp_path, "a", steps=400, seed=7)
    second = bandit_run(tmp_path, "b", steps=400, seed=7)
    other = bandit_run(tmp_path, "c", steps=400, seed=8)
    episodes = [(run.run_dir / "episodes.csv").read_text() for run in (first, second, other)]
    assert episodes[0] == episodes[1] != episodes[2]
    weights = [
        (run.run_dir / "checkpoint" / "model.safetensors").read_bytes() for run in (first, second)
    ]
    assert weights[0] == weights[1]


def test_sigkill_mid_run_resumes_with_the_same_buffer(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    command = [
        sys.executable, "-m", "neuralab", "rl", "train", "--env", BANDIT, "--steps", "1000000",
        "--out", str(run_dir), "--set", "train.checkpoint_every=200",
        *(item for setting in BANDIT_SETTINGS for item in ("--set", setting)),
    ]  # fmt: skip
    environment = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE)
    meta = run_dir / "checkpoint" / "meta.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if meta.is_file() and read_json(meta)["step"] >= 600:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    saved = load_training_state(run_dir / "checkpoint")
    saved_steps, saved_size = saved["counters"]["steps"], saved["buffer"]["size"]
    assert saved_steps >= 600 and saved_size == saved_steps  # one transition per bandit step

    resumed = neuralab.rl.train(resume=run_dir, steps=saved_steps + 300, log=quiet)
    state = load_training_state(run_dir / "checkpoint")
    assert state["counters"]["steps"] == saved_steps + 300
    assert state["counters"]["resumes"] == 1
    assert state["buffer"]["size"] == saved_size + 300
    for name in ("obs", "action", "reward", "next_obs", "bootstrap"):  # the old part is intact
        assert torch.equal(state["buffer"][name][:saved_size], saved["buffer"][name])
    assert resumed.metrics["final"]["return_mean"] == 1.0


def test_resume_keeps_the_agent_and_refuses_a_finished_budget(tmp_path: Path, capsys) -> None:
    run = bandit_run(tmp_path, "done", steps=300)
    assert main(["runs", str(tmp_path)]) == 0  # listed beside classifiers
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:4] == ["done", BANDIT, "dqn", "300/300"]
    assert row[5:7] == ["return", "1.0"]
    assert main(["train", "--resume", str(run.run_dir)]) == 2
    assert "neuralab rl train --resume" in capsys.readouterr().err
    assert main(["evaluate", str(run.run_dir)]) == 2
    assert "agent's run" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="only train"):
        neuralab.rl.train(resume=run.run_dir, overrides=["agent.dueling=true"], log=quiet)
    with pytest.raises(ConfigError, match="already reached step 300"):
        neuralab.rl.train(resume=run.run_dir, log=quiet)


def test_unknown_environment_suggests_close_ids() -> None:
    with pytest.raises(EnvError, match="Did you mean CartPole-v1"):
        neuralab.rl.train(env="CartPole-v2", log=quiet)


def test_continuous_actions_are_refused_with_the_algorithms_that_fit(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="Box action space.*SAC, TD3, PPO"):
        neuralab.rl.train(env="rl_envs:NeuralabTest/Spinner-v0", out=str(tmp_path / "x"),
                          log=quiet)  # fmt: skip
    assert not (tmp_path / "x").exists()  # refused before any folder was made


def test_missing_gymnasium_names_the_install_line(monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def without_gymnasium(name, *args):
        if name == "gymnasium":
            raise ImportError("No module named 'gymnasium'", name="gymnasium")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_gymnasium)
    with pytest.raises(ImportError, match=r"pip install 'neuralab\[rl\]'"):
        neuralab.rl.train(env="CartPole-v1", log=quiet)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'prioritized'"):
        resolve_rl_config("cartpole-dqn", ["replay.prioritised=true"])
    with pytest.raises(ConfigError, match="unknown recipe|not a known|Valid"):
        resolve_rl_config("cartpole-dqm")
    with pytest.raises(ConfigError, match="batch_size 256 exceeds replay.capacity 10"):
        resolve_rl_config("cartpole-dqn", ["replay.capacity=10"])


def test_cli_train_evaluate_play_on_cartpole(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "cartpole"
    status = main([
        "rl", "train", "--recipe", "cartpole-dqn", "--steps", "600", "--out", str(run_dir),
        "--set", "replay.learning_starts=200", "--set", "train.eval_every=300",
        "--set", "train.final_episodes=3", "--set", "agent.hidden=[32]", "--json",
        *(item for setting in QUIET for item in ("--set", setting)),
    ])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    metrics = json.loads(printed[printed.index("{") :])
    assert metrics["steps"] == 600 and metrics["final"]["reward_threshold"] == 475.0
    assert main(["rl", "evaluate", str(run_dir), "--episodes", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 4 and result["env"] == "CartPole-v1"
    gif = tmp_path / "episode.gif"
    assert main(["rl", "play", str(run_dir), "--out", str(gif), "--scale", "0.25"]) == 0
    assert gif.read_bytes()[:6] == b"GIF89a"
    from PIL import Image

    with Image.open(gif) as image:
        assert image.size == (150, 100) and image.n_frames > 5
    assert main(["report", str(run_dir)]) == 0  # the agent's report page
    page = (run_dir / "report.html").read_text()
    assert "CartPole-v1" in page and "data:image/png;base64" in page and "600" in page
    assert main(["rl", "play", str(run_dir), "--out", str(tmp_path / "x.avi")]) == 2
    assert "give a .gif or .mp4" in capsys.readouterr().err
    assert main(["rl", "evaluate", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("recipe", ["cartpole-dqn", "lunarlander-dqn", "acrobot-dqn"])
def test_shipped_recipes_build_their_agent(recipe: str) -> None:
    from neuralab.config.files import recipe_names
    from neuralab.config.rl import RL_RECIPES
    from neuralab.rl.loop import build_agent

    assert recipe in recipe_names(RL_RECIPES)
    config = resolve_rl_config(recipe)
    agent = build_agent(config)  # makes the environment (Box2D for LunarLander)
    assert agent.spec.id == config.env.id and agent.spec.actions >= 2
    assert config.description and config.train.steps >= 50_000

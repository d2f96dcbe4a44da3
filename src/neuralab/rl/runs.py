"""An agent's run directory and checkpoints, in the same safe format as every neuralab run.

<run>/config.yaml       the resolved RLConfig
<run>/checkpoint/       the latest state: the online network (model.safetensors), meta.json,
                        and training.* (target network, optimizer, replay buffer, random
                        generator, counters, history) so that a killed run resumes
<run>/best/             the network that scored best in the periodic evaluations
<run>/history.csv|json  one row per evaluation; episodes.csv: one row per training episode
<run>/metrics.json      the final greedy evaluation; curves.png; tensorboard/
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml

from neuralab.checkpoint.format import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    read_json,
    save_checkpoint,
    write_text_atomic,
)
from neuralab.config.files import build_config
from neuralab.config.rl import RLConfig
from neuralab.rl.agent import Agent
from neuralab.rl.envs import EnvSpec, make_env
from neuralab.rl.network import QNetwork
from neuralab.run.rundir import new_run_dir

HISTORY_FIELDS = [
    "step",
    "episodes",
    "seconds",
    "eval_return_mean",
    "eval_return_std",
    "train_return",
    "epsilon",
    "loss",
    "q",
    "steps_per_second",
]


def new_agent_dir(out: str | None, config: RLConfig, config_text: str) -> Path:
    """Create the run directory (`out`, or runs/<env>-<algo>-<time>, as every run is named)
    with its config.yaml; an earlier run there is never overwritten."""
    env_name = config.env.id.rpartition(":")[2].replace("/", "-")
    return new_run_dir(out, env_name, config.agent.algo, config_text)


def agent_meta(agent: Agent, metrics: dict | None = None) -> dict:
    """What rebuilds and describes the network without the config: the environment it acts in,
    the network's arguments, the step reached and the resolved config."""
    config = agent.config
    return {
        "kind": "agent",
        "algo": config.agent.algo,
        "env": {
            **agent.spec.to_dict(),
            "options": config.env.options,
            "max_episode_steps": config.env.max_episode_steps,
        },
        "network": agent.network_arguments,
        "step": agent.counters.steps,
        "episodes": agent.counters.episodes,
        "metrics": metrics or {},
        "config": config.model_dump(mode="json"),
    }


def save_state(run_dir: Path, agent: Agent) -> None:
    """The resumable checkpoint (atomic: a kill mid-save leaves the previous one) and the
    history files beside it."""
    save_checkpoint(run_dir / "checkpoint", agent.network, agent_meta(agent), agent.state_dict())
    write_records(run_dir, agent)


def save_best(run_dir: Path, agent: Agent, metrics: dict) -> None:
    save_checkpoint(run_dir / "best", agent.network, agent_meta(agent, metrics))


def write_records(run_dir: Path, agent: Agent) -> None:
    history = agent.records.history
    write_text_atomic(run_dir / "history.json", json.dumps(history, indent=1) + "\n")
    write_text_atomic(run_dir / "history.csv", table(history, HISTORY_FIELDS))
    episodes = agent.records.episodes
    write_text_atomic(
        run_dir / "episodes.csv", table(episodes, ["episode", "step", "return", "length"])
    )


def table(rows: list[dict], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_raw_config(run_dir: Path) -> dict:
    """The run's config.yaml as a mapping, before validation (a classifier run's is refused)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {run_dir} is not a neuralab run directory "
            "(give the folder `neuralab rl train` printed)"
        )
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "env" not in raw:
        raise CheckpointError(
            f"{run_dir} is a classifier run, not an agent's; use the classifier verbs on it "
            "(`neuralab evaluate`, `neuralab train --resume`)"
        )
    return raw


def read_config(run_dir: Path) -> RLConfig:
    """The run's config.yaml as an RLConfig (a classifier run's is refused)."""
    return build_config(read_raw_config(run_dir), str(run_dir / "config.yaml"), RLConfig)


def load_agent_network(folder: Path) -> tuple[QNetwork, dict]:
    """The network of an agent checkpoint folder and its meta.json."""
    weights, meta = load_checkpoint(folder)
    if meta.get("kind") != "agent":
        raise CheckpointError(
            f"{folder} holds a classifier, not an agent; `neuralab rl` verbs take agent runs "
            "(use `neuralab evaluate`/`predict` on this one)"
        )
    network = QNetwork(**meta["network"])
    network.load_state_dict(weights)
    return network.eval(), meta


def result_folder(run: str | Path) -> Path:
    """The folder holding a run's result: best/ when the run keeps the best evaluated network
    and has one, else checkpoint/. A checkpoint folder given directly is used as it is."""
    path = Path(run).expanduser()
    if (path / "meta.json").is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"run {path} does not exist (give a run directory)")
    keep = read_config(path).train.keep
    if keep == "best" and (path / "best" / "meta.json").is_file():
        return path / "best"
    if (path / "checkpoint" / "meta.json").is_file():
        return path / "checkpoint"
    raise CheckpointError(f"{path} holds no checkpoint yet (the run stopped before its first save)")


def restore(run_dir: Path, agent: Agent) -> None:
    """Load the latest checkpoint of `run_dir` into a freshly built agent."""
    folder = run_dir / "checkpoint"
    network, meta = load_agent_network(folder)
    saved = EnvSpec(meta["env"]["id"], tuple(meta["env"]["obs_shape"]), meta["env"]["actions"])
    if saved != agent.spec or meta["network"] != agent.network_arguments:
        raise CheckpointError(
            f"{folder} was trained on {saved} with network {meta['network']}; the config now "
            f"asks for {agent.spec} with {agent.network_arguments}: resume with the run's own "
            "env and agent settings (only train.* may change)"
        )
    agent.network.load_state_dict(network.state_dict())
    state = load_training_state(folder)
    if state is None:
        raise CheckpointError(f"{folder} holds no training state to resume from")
    agent.load_state_dict(state)


def agent_records(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    """(history rows, episode rows, metrics) of an agent's run, from its own files."""
    read_raw_config(run_dir)  # refuses a classifier's run with the right verbs
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    with open(run_dir / "episodes.csv", encoding="utf-8") as handle:
        episodes = [
            {"episode": int(row["episode"]), "step": int(row["step"]),
             "return": float(row["return"]), "length": int(row["length"])}
            for row in csv.DictReader(handle)
        ]  # fmt: skip
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    return history, episodes, metrics


def env_from_meta(meta: dict, render: bool = False):
    """The environment an agent checkpoint was trained on (rgb frames when `render`)."""
    env = meta["env"]
    return make_env(env["id"], env["options"], env["max_episode_steps"], render)


def last_saved_step(run_dir: Path) -> int | None:
    try:
        return int(read_json(run_dir / "checkpoint" / "meta.json")["step"])
    except CheckpointError:
        return None


def is_agent_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` (a run directory or a checkpoint folder) holds an agent: its
    meta.json says kind "agent", or (before the first save) its config.yaml has an env."""
    path = Path(run_dir).expanduser()
    for meta in (path / "meta.json", path / "checkpoint" / "meta.json"):
        if meta.is_file():
            try:
                return json.loads(meta.read_text(encoding="utf-8")).get("kind") == "agent"
            except (ValueError, AttributeError):
                return False  # not ours to judge: the classifier's loader names the damage
    config = path / "config.yaml"
    if not config.is_file():
        return False
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and "env" in raw

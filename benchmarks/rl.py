"""DQN side by side: neuralab against Stable-Baselines3 on the same environment, seeds and
evaluation protocol, each run in its own process.

Contenders:
  neuralab        the shipped recipe (cartpole-dqn, lunarlander-dqn, acrobot-dqn)
  neuralab-zoo    neuralab's loop with exactly the peer's settings (plain DQN, same network,
                  same schedule): the same algorithm, so the ratio is the framework's speed
  sb3             Stable-Baselines3's DQN with the rl-baselines3-zoo hyperparameters

Protocol, the same for all: every EVAL_EVERY environment steps the greedy policy plays 10
episodes on fixed seeds; the best-scoring network is kept; at the end it plays 100 episodes on
other seeds (the reported return). Seconds are learning time: evaluation is excluded. "To
threshold" is the learning time until an evaluation first reached the environment's threshold
(CartPole 475, LunarLander 200, Acrobot -100). Torch runs on one thread in every process (the
fastest setting for these small networks on this machine, for the peer too).

Usage:
    python -m benchmarks.rl --env CartPole-v1 --seeds 5            # all three contenders
    python -m benchmarks.rl --env LunarLander-v3 --seeds 3 --only neuralab sb3
    python -m benchmarks.rl --figure docs/rl-benchmark.png         # return vs steps and seconds
Results are appended to benchmarks/results/rl.jsonl; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.processes import run_process

RESULTS = Path(__file__).parent / "results" / "rl.jsonl"
RECIPES = {"CartPole-v1": "cartpole-dqn", "LunarLander-v3": "lunarlander-dqn",
           "Acrobot-v1": "acrobot-dqn"}  # fmt: skip
THRESHOLDS = {"CartPole-v1": 475.0, "LunarLander-v3": 200.0, "Acrobot-v1": -100.0}
# Returns at which "learning seconds to reach it" is compared (the threshold and lower ones,
# so that a contender that never reaches the threshold still has a time to compare).
LEVELS = {"CartPole-v1": [200.0, 475.0], "LunarLander-v3": [0.0, 100.0, 200.0],
          "Acrobot-v1": [-150.0, -100.0]}  # fmt: skip
# rl-baselines3-zoo's hyperparams/dqn.yml for these environments (LunarLander-v2's entry, the
# same task as v3).
ZOO = {
    "CartPole-v1": dict(
        steps=50_000, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
        learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
        gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
        net_arch=[256, 256],
    ),
    "LunarLander-v3": dict(
        steps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
        learning_starts=0, gamma=0.99, target_update_interval=250, train_freq=4,
        gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1,
        net_arch=[256, 256],
    ),
    "Acrobot-v1": dict(
        steps=100_000, learning_rate=6.3e-4, batch_size=128, buffer_size=50_000,
        learning_starts=0, gamma=0.99, target_update_interval=250, train_freq=4,
        gradient_steps=-1, exploration_fraction=0.12, exploration_final_eps=0.1,
        net_arch=[256, 256],
    ),
}  # fmt: skip
EVAL_EVERY = {"CartPole-v1": 2500, "LunarLander-v3": 10_000, "Acrobot-v1": 5000}
EVAL_EPISODES = 10


def zoo_overrides(env: str) -> list[str]:
    """neuralab settings equal to the zoo's (SB3's gradient_steps -1 = as many as steps)."""
    zoo = ZOO[env]
    gradient_steps = zoo["train_freq"] if zoo["gradient_steps"] == -1 else zoo["gradient_steps"]
    return [
        f"env.id={env}", f"train.steps={zoo['steps']}", f"optim.lr={zoo['learning_rate']}",
        f"replay.batch_size={zoo['batch_size']}", f"replay.capacity={zoo['buffer_size']}",
        f"replay.learning_starts={zoo['learning_starts']}", f"agent.gamma={zoo['gamma']}",
        f"optim.target_update={zoo['target_update_interval']}",
        f"optim.train_freq={zoo['train_freq']}", f"optim.gradient_steps={gradient_steps}",
        f"explore.fraction={zoo['exploration_fraction']}",
        f"explore.eps_end={zoo['exploration_final_eps']}",
        f"agent.hidden={zoo['net_arch']}", "agent.double=false", "agent.dueling=false",
        "agent.n_step=1", "replay.prioritized=false", "optim.loss=huber", "optim.grad_clip=10",
    ]  # fmt: skip


def run_neuralab(env: str, seed: int, zoo: bool, steps: int | None, out: Path) -> dict:
    import neuralab

    settings = zoo_overrides(env) if zoo else []
    settings += [
        f"train.eval_every={EVAL_EVERY[env]}", f"train.eval_episodes={EVAL_EPISODES}",
        "train.progress=none", "train.tensorboard=false", "train.threads=1",
        "train.final_episodes=100", "train.keep=best",
    ]  # fmt: skip
    if steps:
        settings.append(f"train.steps={steps}")
    recipe = None if zoo else RECIPES[env]
    run = neuralab.rl.train(recipe, settings, seed=seed, out=str(out), log=lambda _: None)
    curve = [(row["step"], row["seconds"], row["eval_return_mean"]) for row in run.history]
    return {"curve": curve, "final": run.metrics["final"], "seconds": run.metrics["train_seconds"]}


def run_sb3(env_id: str, seed: int, steps: int | None) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    from neuralab.rl.evaluate import FINAL_SEEDS, PERIODIC_SEEDS, evaluate_policy

    torch.set_num_threads(1)
    zoo = dict(ZOO[env_id])
    total = steps or zoo.pop("steps")
    zoo.pop("steps", None)
    net_arch = zoo.pop("net_arch")
    eval_env = gym.make(env_id)

    class Evaluate(BaseCallback):
        """The same periodic greedy evaluation and best-network keeping as neuralab's loop."""

        def __init__(self) -> None:
            super().__init__()
            self.curve, self.best, self.best_state = [], None, None
            self.start, self.excluded, self.done = time.perf_counter(), 0.0, 0

        def _on_step(self) -> bool:
            if self.num_timesteps // EVAL_EVERY[env_id] > self.done:
                self.done = self.num_timesteps // EVAL_EVERY[env_id]
                self.evaluate()
            return True

        def evaluate(self) -> None:
            began = time.perf_counter()
            seconds = began - self.start - self.excluded
            q_net = self.model.policy.q_net
            score = evaluate_policy(q_net, eval_env, EVAL_EPISODES, PERIODIC_SEEDS).summary()
            mean = score["return_mean"]
            self.curve.append((self.num_timesteps, round(seconds, 3), mean))
            if self.best is None or mean >= self.best:
                self.best = mean
                self.best_state = {k: v.clone() for k, v in q_net.state_dict().items()}
            self.excluded += time.perf_counter() - began

    model = DQN("MlpPolicy", env_id, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": net_arch}, **zoo)  # fmt: skip
    callback = Evaluate()
    model.learn(total_timesteps=total, callback=callback)
    seconds = time.perf_counter() - callback.start - callback.excluded
    if total % EVAL_EVERY[env_id]:
        callback.evaluate()
    model.policy.q_net.load_state_dict(callback.best_state)
    final = evaluate_policy(model.policy.q_net, eval_env, 100, FINAL_SEEDS).summary()
    return {"curve": callback.curve, "final": final, "seconds": round(seconds, 3)}


def worker(args: argparse.Namespace) -> None:
    import tempfile

    if args.worker == "sb3":
        result = run_sb3(args.env, args.seed, args.steps)
    else:
        with tempfile.TemporaryDirectory() as folder:
            result = run_neuralab(
                args.env, args.seed, args.worker == "neuralab-zoo", args.steps,
                Path(folder) / "run",
            )  # fmt: skip
    print(json.dumps(result))


def time_to(curve: list, threshold: float) -> float | None:
    return next((seconds for _, seconds, mean in curve if mean >= threshold), None)


def summarise(env: str, contender: str, runs: list[dict]) -> dict:
    """Per contender: seeds solved (final ≥ threshold), final returns, learning seconds, and for
    each level how many seeds reached it and the median learning seconds they took."""
    threshold = THRESHOLDS[env]
    finals = [run["final"]["return_mean"] for run in runs]
    summary = {
        "contender": contender,
        "seeds": len(runs),
        "solved": sum(final >= threshold for final in finals),
        "final_mean": statistics.mean(finals),
        "final_min": min(finals),
        "seconds_mean": statistics.mean(run["seconds"] for run in runs),
        "process_seconds_mean": statistics.mean(run["process_seconds"] for run in runs),
    }
    for level in LEVELS[env]:
        reached = [t for run in runs if (t := time_to(run["curve"], level)) is not None]
        summary[f"reached_{level:g}"] = len(reached)
        summary[f"seconds_to_{level:g}_median"] = statistics.median(reached) if reached else None
    return summary


def print_latest(env: str) -> None:
    """The summary of the latest record for `env` in rl.jsonl, recomputed."""
    records = [json.loads(line) for line in RESULTS.read_text(encoding="utf-8").splitlines()]
    record = [r for r in records if r["env"] == env][-1]
    print(record["date"], record["machine"]["cpu"], record["machine"]["flags"])
    for name, runs in record["contenders"].items():
        print(json.dumps(summarise(env, name, runs)))


def draw_figure(path: Path) -> Path:
    """Evaluation return against environment steps and against learning seconds, mean over
    seeds per contender, for the latest record of each environment in rl.jsonl."""
    from neuralab.inference.plots import new_figure

    latest: dict[str, dict] = {}
    for line in RESULTS.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        latest[record["env"]] = record
    figure = new_figure(11, 3.4 * len(latest))
    panels = figure.subplots(len(latest), 2, squeeze=False)
    for (env, record), (by_steps, by_seconds) in zip(sorted(latest.items()), panels, strict=True):
        for contender, runs in record["contenders"].items():
            length = min(len(run["curve"]) for run in runs)
            steps = [runs[0]["curve"][i][0] for i in range(length)]
            mean = [statistics.mean(run["curve"][i][2] for run in runs) for i in range(length)]
            seconds = [statistics.mean(run["curve"][i][1] for run in runs) for i in range(length)]
            by_steps.plot(steps, mean, "o-", markersize=3, label=contender)
            by_seconds.plot(seconds, mean, "o-", markersize=3, label=contender)
        for axis, label in ((by_steps, "environment steps"), (by_seconds, "learning seconds")):
            axis.axhline(THRESHOLDS[env], color="grey", linestyle="--", linewidth=1)
            axis.set(
                title=f"{env}: greedy return (10 episodes, mean of "
                f"{len(next(iter(record['contenders'].values())))} seeds)",
                xlabel=label,
            )
            axis.grid(alpha=0.3)
            axis.legend()
    figure.savefig(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(ZOO))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, help="override every contender's step budget")
    parser.add_argument("--only", nargs="+", default=["neuralab", "neuralab-zoo", "sb3"])
    parser.add_argument("--worker", choices=["neuralab", "neuralab-zoo", "sb3"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="only draw the latest results into this PNG")
    parser.add_argument("--summary", action="store_true", help="only summarise the latest --env")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.figure:
        print(draw_figure(Path(args.figure)))
        return
    if args.summary:
        print_latest(args.env)
        return
    from benchmarks.machine import machine_info, machine_line

    info = machine_info()
    print(machine_line(info), flush=True)
    record = {"date": time.strftime("%Y-%m-%d"), "machine": info, "env": args.env,
              "steps": args.steps, "contenders": {}}  # fmt: skip
    for seed in range(args.seeds):  # contenders alternate, so drifts in machine speed are shared
        for contender in args.only:
            command = [sys.executable, "-m", "benchmarks.rl", "--worker", contender,
                       "--env", args.env, "--seed", str(seed)]  # fmt: skip
            if args.steps:
                command += ["--steps", str(args.steps)]
            output, wall, memory = run_process(command)
            result = json.loads(output.strip().splitlines()[-1])
            result.update(seed=seed, process_seconds=round(wall, 2), peak_mib=memory)
            record["contenders"].setdefault(contender, []).append(result)
            final = result["final"]["return_mean"]
            print(
                f"{contender:13s} seed {seed}: final {final:8.1f}  learning "
                f"{result['seconds']:7.1f} s  process {wall:7.1f} s",
                flush=True,
            )
    record["summary"] = [summarise(args.env, name, runs)
                         for name, runs in record["contenders"].items()]  # fmt: skip
    for row in record["summary"]:
        print(json.dumps(row))
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

"""The agent's own loop: act in a vector of environments, store transitions, learn from replay,
update the target, evaluate, save. It shares the checkpoint format, run directories, progress
style and TensorBoard logging of every other run, not the classifier's Trainer (whose unit is
an epoch over a fixed dataset).

Schedules count environment steps over all environments, as Stable-Baselines3 does: a learning
phase every `optim.train_freq` steps, a target update every `optim.target_update`, an
evaluation every `train.eval_every`, a resumable save every `train.checkpoint_every`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuralab.config.rl import RLConfig
from neuralab.errors import UserError
from neuralab.rl.agent import Agent
from neuralab.rl.envs import describe, make_env, make_vector
from neuralab.rl.evaluate import FINAL_SEEDS, PERIODIC_SEEDS, evaluate_policy
from neuralab.rl.progress import Progress, eval_line
from neuralab.rl.report import draw_agent_curves
from neuralab.rl.runs import (
    load_agent_network,
    result_folder,
    save_best,
    save_state,
    write_records,
)
from neuralab.run.tracking import have_tensorboard

RECENT_EPISODES = 10  # the training return shown is the mean of this many last episodes
RESUME_SEED_STRIDE = 10_000  # a resumed run's environments get seeds this far from the last


class AgentStopped(UserError, RuntimeError):
    """Training was interrupted; the message says where the resumable checkpoint is."""


@dataclass
class AgentRun:
    """What `neuralab.rl.train` returns: where the run is, its final evaluation and history."""

    run_dir: Path
    metrics: dict
    history: list[dict]


class Loop:
    """One run's acting and learning. `run()` goes from the agent's counters to train.steps."""

    def __init__(self, config: RLConfig, agent: Agent, run_dir: Path) -> None:
        self.config, self.agent, self.run_dir = config, agent, run_dir
        env = config.env
        self.envs = make_vector(
            env.id, env.num_envs, env.vectorization, env.options, env.max_episode_steps
        )
        self.eval_env = make_env(env.id, env.options, env.max_episode_steps)
        self.num_envs = env.num_envs
        self.overlap = hasattr(self.envs, "step_async")  # AsyncVectorEnv: act while learning
        self.returns = np.zeros(env.num_envs)
        self.lengths = np.zeros(env.num_envs, dtype=np.int64)
        self.progress = Progress(config.train.progress, config.train.steps)
        self.writer = tensorboard_writer(run_dir) if config.train.tensorboard else None
        self.reset_metrics()

    def reset_metrics(self) -> None:
        self.loss_sum, self.q_sum, self.updates_logged = torch.zeros(()), torch.zeros(()), 0
        self.window_start, self.window_steps = time.perf_counter(), self.agent.counters.steps

    def reset_envs(self) -> torch.Tensor:
        """Fresh episodes; a resumed run's seeds differ from the first start's."""
        counters, seed = self.agent.counters, self.config.train.seed
        first = seed + RESUME_SEED_STRIDE * counters.resumes
        obs, _ = self.envs.reset(seed=[first + index for index in range(self.num_envs)])
        self.agent.nstep.clear()
        return torch.as_tensor(obs, dtype=torch.float32)

    def run(self) -> None:
        counters, total = self.agent.counters, self.config.train.steps
        obs = self.reset_envs()
        self.progress.start(counters.steps)
        mark = time.perf_counter()
        try:
            while counters.steps < total:
                obs = self.collect(obs)
                if self.due("evaluations", self.config.train.eval_every) or (
                    counters.steps >= total
                ):
                    counters.train_seconds += time.perf_counter() - mark
                    self.evaluate()
                    mark = time.perf_counter()
                if self.due("saves", self.config.train.checkpoint_every):
                    counters.train_seconds += time.perf_counter() - mark
                    save_state(self.run_dir, self.agent)
                    mark = time.perf_counter()
                self.show_progress()
        except KeyboardInterrupt:
            counters.train_seconds += time.perf_counter() - mark
            self.progress.stop()
            save_state(self.run_dir, self.agent)
            raise AgentStopped(
                f"interrupted at step {counters.steps:,}; the state is saved in "
                f"{self.run_dir / 'checkpoint'}: continue with `neuralab rl train --resume "
                f"{self.run_dir}`"
            ) from None
        finally:
            self.progress.stop()
            self.envs.close()
        save_state(self.run_dir, self.agent)

    def due(self, counter: str, every: int) -> bool:
        """Whether the step count crossed another multiple of `every` since `counter` last
        moved (then it moves)."""
        reached = self.agent.counters.steps // every
        if reached > getattr(self.agent.counters, counter):
            setattr(self.agent.counters, counter, reached)
            return True
        return False

    def collect(self, obs: torch.Tensor) -> torch.Tensor:
        """One step of every environment with ε-greedy actions, and the learning it makes due;
        the transitions go to the replay buffer (through the n-step writer). With async
        environments the network learns while they step. Returns the next observations."""
        agent = self.agent
        actions = agent.dqn.act(obs, agent.epsilon())
        if self.overlap:
            self.envs.step_async(actions.numpy())
            self.learn()  # what the steps so far made due, while the workers step
            result = self.envs.step_wait()
        else:
            result = self.envs.step(actions.numpy())
        next_obs = self.store(obs, actions, *result)
        if not self.overlap:
            self.learn()
        return next_obs

    def store(self, obs, actions, next_obs, reward, terminated, truncated, info) -> torch.Tensor:
        """Replay transitions and episode records of one vector step's results."""
        agent = self.agent
        next_obs = torch.as_tensor(next_obs, dtype=torch.float32)
        terminated, truncated = torch.as_tensor(terminated), torch.as_tensor(truncated)
        done = terminated | truncated
        any_done = bool(done.any())  # read once: this runs every step
        final = next_obs
        if any_done:  # same-step autoreset: the episode's last observation is in info
            final = next_obs.clone()
            for env in done.nonzero().squeeze(1).tolist():
                final[env] = torch.as_tensor(info["final_obs"][env], dtype=torch.float32)
        rewards = torch.as_tensor(reward, dtype=torch.float32)
        transitions = agent.nstep.push(obs, actions, rewards, final, terminated, truncated)
        if len(transitions[1]):
            agent.buffer.add(*transitions)
        self.returns += reward
        self.lengths += 1
        agent.counters.steps += self.num_envs
        if any_done:
            self.finish_episodes(done)
        return next_obs

    def finish_episodes(self, done: torch.Tensor) -> None:
        counters = self.agent.counters
        for env in done.nonzero().squeeze(1).tolist():
            counters.episodes += 1
            row = {
                "episode": counters.episodes,
                "step": counters.steps,
                "return": float(self.returns[env]),
                "length": int(self.lengths[env]),
            }
            self.agent.records.episodes.append(row)
            if self.writer is not None:
                self.writer.add_scalar("episode/return", row["return"], counters.steps)
                self.writer.add_scalar("episode/length", row["length"], counters.steps)
            self.returns[env], self.lengths[env] = 0.0, 0

    def learn(self) -> None:
        """The learning phases and target updates that the steps just taken made due."""
        counters, learn = self.agent.counters, self.config.optim
        while counters.phases < counters.steps // learn.train_freq:
            counters.phases += 1
            sums = self.agent.learn_phase()
            if sums is not None:
                self.loss_sum += sums[0]
                self.q_sum += sums[1]
                self.updates_logged += learn.gradient_steps
        if self.due("target_updates", learn.target_update):
            self.agent.dqn.update_target(learn.tau)

    def recent_return(self) -> float | None:
        episodes = self.agent.records.episodes[-RECENT_EPISODES:]
        return sum(row["return"] for row in episodes) / len(episodes) if episodes else None

    def show_progress(self) -> None:
        if self.progress.bar is None:  # plain lines or none: nothing to refresh per step
            return
        counters = self.agent.counters
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        speed = (counters.steps - self.window_steps) / elapsed
        self.progress.update(
            counters.steps, counters.episodes, self.recent_return(), self.agent.epsilon(), speed
        )

    def evaluate(self) -> None:
        """Greedy episodes on the evaluation seeds; the history row; best/ when it improved."""
        agent, counters = self.agent, self.agent.counters
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        evaluation = evaluate_policy(
            agent.network, self.eval_env, self.config.train.eval_episodes, PERIODIC_SEEDS
        )
        summary = evaluation.summary()
        updates = self.updates_logged
        row = {
            "step": counters.steps,
            "episodes": counters.episodes,
            "seconds": round(counters.train_seconds, 3),
            "eval_return_mean": summary["return_mean"],
            "eval_return_std": summary["return_std"],
            "train_return": self.recent_return(),
            "epsilon": agent.epsilon(),
            "loss": float(self.loss_sum) / updates if updates else None,
            "q": float(self.q_sum) / updates if updates else None,
            "steps_per_second": (counters.steps - self.window_steps) / elapsed,
        }
        agent.records.history.append(row)
        self.progress.line(eval_line(row, self.config.train.steps))
        if self.writer is not None:
            for key in ("eval_return_mean", "train_return", "epsilon", "loss", "q"):
                if row[key] is not None:
                    self.writer.add_scalar(f"train/{key}", row[key], counters.steps)
        if counters.best_return is None or summary["return_mean"] >= counters.best_return:
            counters.best_return, counters.best_step = summary["return_mean"], counters.steps
            save_best(self.run_dir, agent, {"eval": summary, "step": counters.steps})
        write_records(self.run_dir, agent)
        self.reset_metrics()

    def final_evaluation(self) -> dict:
        """The result network (best/ or the last) over train.final_episodes new seeds."""
        folder = result_folder(self.run_dir)
        network, _ = load_agent_network(folder)
        episodes = self.config.train.final_episodes
        threshold = self.eval_env.spec.reward_threshold if self.eval_env.spec else None
        counters = self.agent.counters
        metrics = {
            "env": self.config.env.id,
            "algo": self.config.agent.algo,
            "steps": counters.steps,
            "episodes": counters.episodes,
            "train_seconds": round(counters.train_seconds, 3),
            "weights": folder.name,
            "best_step": counters.best_step,
            "best_periodic_return": counters.best_return,
        }
        if episodes:
            evaluation = evaluate_policy(network, self.eval_env, episodes, FINAL_SEEDS)
            metrics["final"] = evaluation.summary(threshold)
        return metrics

    def close(self) -> None:
        self.eval_env.close()
        if self.writer is not None:
            self.writer.close()
        draw_agent_curves(self.run_dir, self.agent.records.history, self.agent.records.episodes)


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter in <run>/tensorboard, or None when tensorboard is not installed."""
    if not have_tensorboard():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"))


def build_agent(config: RLConfig) -> Agent:
    """The agent for the config's environment (made once to read its spaces)."""
    env = make_env(config.env.id, config.env.options, config.env.max_episode_steps)
    try:
        spec = describe(env, config.env.id)
    finally:
        env.close()
    return Agent(config, spec)

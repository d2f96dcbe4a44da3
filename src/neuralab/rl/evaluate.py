"""Greedy evaluation over episodes with distinct seeds, and recording an episode's frames."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Seeds of evaluation episodes start far from the training environments' (seed + i), and the
# final evaluation uses other seeds than the periodic ones that choose the best network, so the
# reported score is not the maximum of noisy estimates.
PERIODIC_SEEDS = 1_000_000
FINAL_SEEDS = 2_000_000


@dataclass
class Evaluation:
    """Returns and lengths of greedy episodes."""

    returns: list[float]
    lengths: list[int]
    seeds: list[int]

    def summary(self, solved_at: float | None = None) -> dict:
        count = len(self.returns)
        mean = sum(self.returns) / count
        std = math.sqrt(sum((r - mean) ** 2 for r in self.returns) / count)
        summary = {
            "episodes": count,
            "return_mean": mean,
            "return_std": std,
            "return_min": min(self.returns),
            "return_max": max(self.returns),
            "length_mean": sum(self.lengths) / count,
            "first_seed": self.seeds[0],
        }
        if solved_at is not None:  # the environment's own threshold (spec.reward_threshold)
            summary["reward_threshold"] = solved_at
            summary["success_rate"] = sum(r >= solved_at for r in self.returns) / count
        return summary


def greedy_action(network: nn.Module, obs) -> int:
    with torch.inference_mode():
        values = network(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
    return int(values.argmax(dim=1))


def evaluate_policy(network: nn.Module, env, episodes: int, first_seed: int) -> Evaluation:
    """Play `episodes` greedy episodes, episode i reset with seed first_seed + i."""
    returns, lengths, seeds = [], [], []
    was_training = network.training
    network.eval()
    try:
        for index in range(episodes):
            obs, _ = env.reset(seed=first_seed + index)
            total, length, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(greedy_action(network, obs))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
            seeds.append(first_seed + index)
    finally:
        network.train(was_training)
    return Evaluation(returns, lengths, seeds)


def record_episode(network: nn.Module, env, seed: int, every: int = 1) -> tuple[list, float]:
    """The rgb frames (H, W, 3 uint8 arrays) of one greedy episode, every `every`-th kept, and
    its return. `env` must have been made with render_mode="rgb_array"."""
    obs, _ = env.reset(seed=seed)
    frames, total, done, step = [env.render()], 0.0, False, 0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(greedy_action(network, obs))
        total += float(reward)
        done = terminated or truncated
        step += 1
        if step % every == 0 or done:
            frames.append(env.render())
    return frames, total

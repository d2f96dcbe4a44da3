"""Tiny Gymnasium environments for the agent tests, registered on import (as a user's own
environment module is: `--env rl_envs:NeuralabTest/Bandit-v0`).

- Bandit: one step per episode; the observation marks a side, acting on it pays 1.
- Counter: the observation is the step number t; it never ends by itself (a time limit
  truncates it), or, as Fall, it terminates at t = 3. Rewards are 1 per step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Bandit(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        return self.observe(), {}

    def observe(self):
        obs = np.zeros(2, np.float32)
        obs[self.side] = 1.0
        return obs

    def step(self, action):
        reward = 1.0 if int(action) == self.side else 0.0
        return self.observe(), reward, True, False, {}


class Counter(gym.Env):
    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fall_at: int | None = None):
        self.fall_at = fall_at

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.fall_at is not None and self.t >= self.fall_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


class Spinner(gym.Env):
    """A continuous action space (refused by DQN)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


gym.register("NeuralabTest/Bandit-v0", entry_point=Bandit)
gym.register("NeuralabTest/Counter-v0", entry_point=Counter)
gym.register("NeuralabTest/Fall-v0", entry_point=Counter, kwargs={"fall_at": 3})
gym.register("NeuralabTest/Spinner-v0", entry_point=Spinner)

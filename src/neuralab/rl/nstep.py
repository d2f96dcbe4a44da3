"""n-step returns from a vector of environments, episode ends handled per environment.

Each environment keeps its last n steps. A full window yields the transition
(s_t, a_t, r_t + γ r_{t+1} + … + γ^{n-1} r_{t+n-1}, s_{t+n}, bootstrap γ^n). When an episode
ends, every step still in the window is flushed with the rewards up to the end:
- terminated (the task ended: the pole fell, the lander landed): bootstrap 0, since nothing
  follows the final state;
- truncated (a time limit cut it): bootstrap γ^k from the final observation, since the
  episode would have gone on (Pardo et al. 2018, "Time limits in reinforcement learning").
"""

from __future__ import annotations

from collections import deque

import torch


class NStepWriter:
    """Turns per-step results of `num_envs` environments into replay transitions.

    `push` takes one vector step (tensors with first dimension num_envs) and returns the
    transitions it completes as a tuple of tensors (obs, action, return, next_obs, bootstrap),
    possibly empty. `active` marks environments whose step is real (None: all): with
    Gymnasium's next-step autoreset, the step after an episode's end only resets that
    environment (neuralab's loop uses same-step autoreset, where every step is real).
    """

    def __init__(self, n: int, gamma: float, num_envs: int) -> None:
        self.n, self.gamma = n, gamma
        self.windows: list[deque] = [deque() for _ in range(num_envs)]

    def push(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        active: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        if self.n == 1:  # the common case, vectorised: no window to keep
            bootstrap = self.gamma * (~terminated).float()
            if active is None:
                return obs, action, reward, next_obs, bootstrap
            keep = active.nonzero().squeeze(1)
            return obs[keep], action[keep], reward[keep], next_obs[keep], bootstrap[keep]
        out: list[tuple] = []
        envs = range(len(obs)) if active is None else active.nonzero().squeeze(1).tolist()
        for env in envs:
            window = self.windows[env]
            window.append((obs[env], action[env], float(reward[env])))
            if terminated[env] or truncated[env]:
                while window:
                    out.append(self.emit(window, next_obs[env], bool(terminated[env])))
                    window.popleft()
            elif len(window) == self.n:
                out.append(self.emit(window, next_obs[env], False))
                window.popleft()
        return self.stack(out, obs)

    def emit(self, window: deque, next_obs: torch.Tensor, terminated: bool) -> tuple:
        """The transition from the window's oldest step to `next_obs`."""
        discounted = sum(self.gamma**k * step[2] for k, step in enumerate(window))
        bootstrap = 0.0 if terminated else self.gamma ** len(window)
        first_obs, first_action, _ = window[0]
        return first_obs, first_action, discounted, next_obs, bootstrap

    @staticmethod
    def stack(transitions: list[tuple], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not transitions:
            empty = like[:0]
            return empty, torch.zeros(0, dtype=torch.int64), torch.zeros(0), empty, torch.zeros(0)
        obs, action, discounted, next_obs, bootstrap = zip(*transitions, strict=True)
        return (
            torch.stack(obs),
            torch.stack(action),
            torch.tensor(discounted, dtype=torch.float32),
            torch.stack(next_obs),
            torch.tensor(bootstrap, dtype=torch.float32),
        )

    def clear(self) -> None:
        """Forget partial windows (a resumed run starts fresh episodes)."""
        for window in self.windows:
            window.clear()

"""Experience replay: transitions kept in preallocated tensors and sampled for learning.

`ReplayBuffer` samples uniformly; `PrioritizedReplay` samples in proportion to priority^alpha
(Schaul et al. 2016, proportional variant) through a `SumTree` and returns importance weights.
A transition is (observation, action, n-step return, next observation, bootstrap), where
bootstrap is gamma^k when the value of the next observation counts and 0 when the episode
terminated — so truncation by a time limit bootstraps and termination does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PRIORITY_FLOOR = 1e-6  # added to |TD error| so that no stored transition becomes unsampleable


class SumTree:
    """A binary tree over `capacity` non-negative priorities whose inner nodes hold the sums of
    their children: setting a priority and drawing an index in proportion to the priorities
    both take O(log capacity), vectorised over a batch.

    Example:
        >>> tree = SumTree(4); tree.update(np.array([0, 2]), np.array([1.0, 3.0]))
        >>> tree.total, tree.find(np.array([0.5, 1.5])).tolist()
        (4.0, [0, 2])
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())  # a power of two ≥ capacity
        self.nodes = np.zeros(2 * self.leaves, dtype=np.float64)  # node 1 is the root

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def priorities(self, indices: np.ndarray) -> np.ndarray:
        return self.nodes[self.leaves + indices]

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of `indices` (a later duplicate wins) and refresh their ancestors."""
        nodes = self.leaves + np.asarray(indices, dtype=np.int64)
        if len(nodes) == 0:
            return
        self.nodes[nodes] = priorities
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.nodes[nodes] = self.nodes[2 * nodes] + self.nodes[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, values: np.ndarray) -> np.ndarray:
        """For each value in [0, total), the leaf whose cumulative-priority span holds it."""
        values = np.minimum(np.asarray(values, dtype=np.float64), np.nextafter(self.total, 0))
        nodes = np.ones(len(values), dtype=np.int64)
        while nodes[0] < self.leaves:  # every path has the same depth
            left = self.nodes[2 * nodes]
            right = values >= left
            values = np.where(right, values - left, values)
            nodes = 2 * nodes + right
        return nodes - self.leaves


@dataclass
class Sample:
    """A batch drawn from a buffer. weights: importance-sampling weights (ones when uniform)."""

    indices: torch.Tensor  # (B,) int64 positions in the buffer
    obs: torch.Tensor  # (B, *obs_shape)
    action: torch.Tensor  # (B,) int64
    reward: torch.Tensor  # (B,) float32: the (n-step) discounted return
    next_obs: torch.Tensor  # (B, *obs_shape)
    bootstrap: torch.Tensor  # (B,) float32: gamma^k, or 0 after termination
    weights: torch.Tensor | None  # (B,) float32 importance weights; None: uniform (all ones)


FIELDS = ("obs", "next_obs", "action", "reward", "bootstrap")


class ReplayBuffer:
    """A ring of `capacity` transitions in one preallocated float32 tensor, sampled uniformly.

    A row is [obs (flattened) | next_obs | action | reward | bootstrap], so that storing a step
    and drawing a batch are one copy each rather than five (on a small network the copies'
    overhead is a fair share of an update). Actions are stored as floats: exact for any
    discrete action index below 2**24. `obs`, `next_obs`, `action`, `reward`, `bootstrap` are
    views of the columns.

    generator: the run's torch.Generator, so that sampling is reproducible and resumable.
    """

    prioritized = False

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], generator: torch.Generator
    ) -> None:
        self.capacity = capacity
        self.generator = generator
        self.obs_shape = tuple(obs_shape)
        self.obs_size = math.prod(obs_shape)
        self.rows = torch.zeros(capacity, 2 * self.obs_size + 3, dtype=torch.float32)
        self.position = 0  # where the next transition goes
        self.size = 0  # transitions stored (≤ capacity)

    @property
    def obs(self) -> torch.Tensor:
        return self.rows[:, : self.obs_size].view(self.capacity, *self.obs_shape)

    @property
    def next_obs(self) -> torch.Tensor:
        return self.rows[:, self.obs_size : 2 * self.obs_size].view(self.capacity, *self.obs_shape)

    @property
    def action(self) -> torch.Tensor:
        return self.rows[:, -3].long()

    @property
    def reward(self) -> torch.Tensor:
        return self.rows[:, -2]

    @property
    def bootstrap(self) -> torch.Tensor:
        return self.rows[:, -1]

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        bootstrap: torch.Tensor,
    ) -> slice | torch.Tensor:
        """Store a batch of k transitions (first dimension k); returns where they went (a
        slice, or an index tensor when the ring wraps)."""
        count = len(action)
        start = self.position
        if start + count <= self.capacity:  # the usual case: one slice, no index tensor
            indices = slice(start, start + count)
        else:
            indices = (start + torch.arange(count)) % self.capacity
        self.rows[indices] = torch.cat(
            [
                obs.reshape(count, -1),
                next_obs.reshape(count, -1),
                action.reshape(count, 1).float(),
                reward.reshape(count, 1),
                bootstrap.reshape(count, 1),
            ],
            dim=1,
        )
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)
        return indices

    def sample(self, batch_size: int) -> Sample:
        indices = torch.randint(self.size, (batch_size,), generator=self.generator)
        return self.gather(indices, None)

    def gather(self, indices: torch.Tensor, weights: torch.Tensor | None) -> Sample:
        rows = self.rows[indices]  # (B, 2·obs + 3): one copy
        size, shape = self.obs_size, (len(indices), *self.obs_shape)
        return Sample(
            indices,
            rows[:, :size].view(shape),
            rows[:, -3].long(),
            rows[:, -2],
            rows[:, size : 2 * size].view(shape),
            rows[:, -1],
            weights,
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform replay keeps no priorities."""

    def state_dict(self) -> dict:
        """The stored transitions (only the filled part) and the ring's position."""
        filled = slice(0, self.size)
        return {
            "position": self.position,
            "size": self.size,
            **{name: getattr(self, name)[filled].clone() for name in FIELDS},
        }

    def load_state_dict(self, state: dict) -> None:
        size = int(state["size"])
        if size > self.capacity or tuple(state["obs"].shape[1:]) != self.obs_shape:
            raise ValueError(
                f"saved replay buffer ({size} transitions of {tuple(state['obs'].shape[1:])}) "
                f"does not fit this one ({self.capacity} of {self.obs_shape})"
            )
        self.position, self.size = 0, 0
        self.add(*(state[name] for name in ("obs", "action", "reward", "next_obs", "bootstrap")))
        self.size, self.position = size, int(state["position"])


class PrioritizedReplay(ReplayBuffer):
    """Proportional prioritized replay: P(i) = p_i^alpha / sum p^alpha, weights
    (N·P(i))^-beta / max, new transitions at the highest priority seen so far."""

    prioritized = True

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        generator: torch.Generator,
        alpha: float = 0.6,
        beta: float = 0.4,
    ) -> None:
        super().__init__(capacity, obs_shape, generator)
        self.alpha, self.beta = alpha, beta  # the loop anneals beta towards 1
        self.tree = SumTree(capacity)
        self.max_priority = 1.0  # of |TD error| + floor, before the alpha exponent

    def add(self, obs, action, reward, next_obs, bootstrap) -> slice | torch.Tensor:
        indices = super().add(obs, action, reward, next_obs, bootstrap)
        if isinstance(indices, slice):
            positions = np.arange(indices.start, indices.stop)
        else:
            positions = indices.numpy()
        self.tree.update(positions, np.full(len(positions), self.max_priority**self.alpha))
        return indices

    def sample(self, batch_size: int) -> Sample:
        # Stratified: one draw from each of batch_size equal slices of the total mass.
        uniform = torch.rand(batch_size, generator=self.generator, dtype=torch.float64).numpy()
        values = (np.arange(batch_size) + uniform) * (self.tree.total / batch_size)
        indices = np.minimum(self.tree.find(values), self.size - 1)
        probabilities = self.tree.priorities(indices) / self.tree.total
        weights = (self.size * probabilities) ** -self.beta
        weights = torch.from_numpy(weights / weights.max()).float()
        return self.gather(torch.from_numpy(indices), weights)

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        priorities = td_errors.detach().abs().double().cpu().numpy() + PRIORITY_FLOOR
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(indices.numpy(), priorities**self.alpha)

    def state_dict(self) -> dict:
        state = super().state_dict()
        indices = np.arange(self.size)
        state["priorities"] = torch.from_numpy(self.tree.priorities(indices).copy())
        state["max_priority"] = self.max_priority
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.max_priority = float(state["max_priority"])
        self.tree.update(np.arange(self.size), state["priorities"].numpy())

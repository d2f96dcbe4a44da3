"""Replay buffers against brute force: the sum tree's search against a cumulative-sum scan,
prioritized sampling frequencies and importance weights against their formulas, and the ring's
overwrite order and saved state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralab.rl.replay import PrioritizedReplay, ReplayBuffer, SumTree


def brute_force_find(priorities: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The leaf whose span [cumsum before, cumsum after) holds each value, by a linear scan."""
    edges = np.cumsum(priorities)
    return np.array([int(np.argmax(value < edges)) for value in values])


@pytest.mark.parametrize("capacity", [1, 2, 5, 8, 13, 100])
def test_sum_tree_finds_what_a_cumulative_scan_finds(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    priorities = rng.uniform(0.0, 3.0, capacity)
    priorities[rng.random(capacity) < 0.2] = 0.0  # empty leaves are never drawn
    priorities[0] = max(priorities[0], 0.5)
    tree.update(np.arange(capacity), priorities)
    assert tree.total == pytest.approx(priorities.sum())
    values = rng.uniform(0.0, priorities.sum(), 2000)
    found = tree.find(values)
    np.testing.assert_array_equal(found, brute_force_find(priorities, values))
    assert (priorities[found] > 0).all()


def test_sum_tree_updates_keep_every_inner_sum() -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(10)
    reference = np.zeros(10)
    for _ in range(50):
        indices = rng.integers(0, 10, 4)
        values = rng.uniform(0, 2, 4)
        tree.update(indices, values)
        for index, value in zip(indices, values, strict=True):  # a later duplicate wins
            reference[index] = value
        assert tree.total == pytest.approx(reference.sum())
        np.testing.assert_allclose(tree.priorities(np.arange(10)), reference)
    inner = tree.nodes[1 : tree.leaves]
    children = tree.nodes[2 : 2 * tree.leaves : 2] + tree.nodes[3 : 2 * tree.leaves : 2]
    np.testing.assert_allclose(inner, children)


def filled(buffer: ReplayBuffer, count: int) -> ReplayBuffer:
    obs = torch.arange(count, dtype=torch.float32).unsqueeze(1)
    buffer.add(obs, torch.arange(count) % 2, obs.squeeze(1), obs + 1, torch.full((count,), 0.9))
    return buffer


def test_prioritized_sampling_follows_priority_to_the_alpha() -> None:
    generator = torch.Generator().manual_seed(0)
    buffer = filled(PrioritizedReplay(4, (1,), generator, alpha=0.5, beta=0.4), 4)
    td_errors = torch.tensor([0.0, 1.0, 4.0, 9.0])
    buffer.update_priorities(torch.arange(4), td_errors)
    counts = np.zeros(4)
    for _ in range(400):
        sample = buffer.sample(50)
        counts += np.bincount(sample.indices.numpy(), minlength=4)
    expected = (td_errors.numpy() + 1e-6) ** 0.5
    expected /= expected.sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)
    # Importance weights: (N·P(i))^-beta normalised by the batch's largest.
    sample = buffer.sample(64)
    probabilities = expected[sample.indices.numpy()]
    weights = (4 * probabilities) ** -0.4
    np.testing.assert_allclose(sample.weights.numpy(), weights / weights.max(), rtol=1e-5)
    assert (sample.obs.squeeze(1) == sample.indices.float()).all()  # rows match their indices


def test_new_transitions_get_the_highest_priority_seen() -> None:
    buffer = filled(PrioritizedReplay(8, (1,), torch.Generator(), alpha=1.0), 2)
    buffer.update_priorities(torch.tensor([0, 1]), torch.tensor([5.0, 0.5]))
    filled(buffer, 1)  # lands at index 2
    assert buffer.tree.priorities(np.array([2]))[0] == pytest.approx(5.0 + 1e-6)


def test_the_ring_overwrites_the_oldest_and_uniform_sampling_covers_it() -> None:
    buffer = filled(ReplayBuffer(5, (1,), torch.Generator().manual_seed(1)), 7)
    assert len(buffer) == 5 and buffer.position == 2
    assert buffer.obs.squeeze(1).tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    drawn = torch.cat([buffer.sample(32).indices for _ in range(20)])
    assert set(drawn.tolist()) == set(range(5))
    assert buffer.sample(4).weights is None  # uniform: the loss is a plain mean


@pytest.mark.parametrize("kind", [ReplayBuffer, PrioritizedReplay])
def test_a_saved_buffer_restores_its_contents_and_sampling(kind) -> None:
    original = filled(kind(16, (1,), torch.Generator().manual_seed(3)), 11)
    original.update_priorities(torch.arange(11), torch.linspace(0, 2, 11))
    state = original.state_dict()
    copy = kind(16, (1,), torch.Generator().manual_seed(3))
    copy.load_state_dict(state)
    for name in ("obs", "next_obs", "action", "reward", "bootstrap"):
        assert torch.equal(getattr(copy, name), getattr(original, name))
    assert (copy.size, copy.position) == (original.size, original.position)
    assert torch.equal(copy.sample(8).indices, original.sample(8).indices)


def test_a_buffer_of_another_shape_is_refused() -> None:
    state = filled(ReplayBuffer(4, (1,), torch.Generator()), 2).state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        ReplayBuffer(4, (3,), torch.Generator()).load_state_dict(state)

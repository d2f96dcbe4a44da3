"""n-step returns against hand computations, and the rule that truncation bootstraps while
termination does not."""

from __future__ import annotations

import pytest
import torch

from neuralab.rl.nstep import NStepWriter

GAMMA = 0.9


def step(writer: NStepWriter, t: int, reward: float, terminated=False, truncated=False, envs=1):
    """Push step t of every environment: observation [t], action t % 2, next observation [t+1]."""
    obs = torch.full((envs, 1), float(t))
    return writer.push(
        obs,
        torch.full((envs,), t % 2),
        torch.full((envs,), reward),
        obs + 1,
        torch.full((envs,), terminated),
        torch.full((envs,), truncated),
        torch.ones(envs, dtype=torch.bool),
    )


def rows(transitions) -> list[tuple]:
    obs, action, reward, next_obs, bootstrap = transitions
    return [
        (o.item(), a.item(), pytest.approx(r.item()), n.item(), pytest.approx(b.item()))
        for o, a, r, n, b in zip(obs, action, reward, next_obs, bootstrap, strict=True)
    ]


def test_three_step_returns_by_hand() -> None:
    writer = NStepWriter(3, GAMMA, 1)
    assert rows(step(writer, 0, 1.0)) == []
    assert rows(step(writer, 1, 2.0)) == []
    # Window full: s0 → s3 with 1 + 0.9·2 + 0.81·3 and bootstrap 0.9³.
    assert rows(step(writer, 2, 3.0)) == [(0.0, 0, 1 + 1.8 + 2.43, 3.0, 0.729)]
    assert rows(step(writer, 3, 4.0)) == [(1.0, 1, 2 + 2.7 + 3.24, 4.0, 0.729)]


def test_termination_flushes_without_bootstrap() -> None:
    writer = NStepWriter(3, GAMMA, 1)
    step(writer, 0, 1.0)
    step(writer, 1, 2.0)
    ended = rows(step(writer, 2, 3.0, terminated=True))
    # Every step left in the window ends at the final state s3, none bootstraps.
    assert ended == [
        (0.0, 0, 1 + 1.8 + 2.43, 3.0, 0.0),
        (1.0, 1, 2 + 2.7, 3.0, 0.0),
        (2.0, 0, 3.0, 3.0, 0.0),
    ]
    assert rows(step(writer, 10, 5.0)) == []  # the next episode starts with an empty window


def test_truncation_flushes_with_bootstrap_from_the_final_observation() -> None:
    writer = NStepWriter(3, GAMMA, 1)
    step(writer, 0, 1.0)
    ended = rows(step(writer, 1, 2.0, truncated=True))
    assert ended == [(0.0, 0, 1 + 1.8, 2.0, GAMMA**2), (1.0, 1, 2.0, 2.0, GAMMA)]


@pytest.mark.parametrize("n", [1, 2])
def test_one_step_termination_is_zero_and_truncation_is_gamma(n: int) -> None:
    writer = NStepWriter(n, GAMMA, 2)
    obs = torch.tensor([[0.0], [10.0]])
    out = writer.push(
        obs,
        torch.tensor([0, 1]),
        torch.tensor([1.0, 1.0]),
        obs + 1,
        torch.tensor([True, False]),  # env 0 terminates
        torch.tensor([False, True]),  # env 1 hits its time limit
        torch.ones(2, dtype=torch.bool),
    )
    by_obs = {o: b for o, _, _, _, b in rows(out)}
    assert by_obs == {0.0: 0.0, 10.0: GAMMA}


def test_inactive_environments_store_nothing() -> None:
    writer = NStepWriter(1, GAMMA, 2)
    obs = torch.zeros(2, 1)
    never = torch.zeros(2, dtype=torch.bool)
    actions = torch.zeros(2, dtype=torch.int64)
    out = writer.push(obs, actions, torch.ones(2), obs, never, never, torch.tensor([False, True]))
    assert len(out[1]) == 1


def test_environments_keep_separate_windows() -> None:
    writer = NStepWriter(2, GAMMA, 2)
    step(writer, 0, 1.0, envs=2)
    out = rows(step(writer, 1, 2.0, envs=2))
    assert out == [(0.0, 0, 1 + 1.8, 2.0, GAMMA**2)] * 2

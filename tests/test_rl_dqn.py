"""The DQN learner against plain computations: targets (plain and Double), the loss and its
importance weights, target-network updates, ε-greedy draws, and the dueling head."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from neuralab.rl.dqn import DQN
from neuralab.rl.network import QNetwork
from neuralab.rl.replay import Sample


def learner(double: bool, loss: str = "huber", seed: int = 0) -> DQN:
    torch.manual_seed(seed)
    return DQN(QNetwork(3, 4, [8]), 1e-2, double, loss, None, torch.Generator().manual_seed(0))


def batch(size: int = 6) -> Sample:
    generator = torch.Generator().manual_seed(5)
    return Sample(
        indices=torch.arange(size),
        obs=torch.randn(size, 3, generator=generator),
        action=torch.randint(4, (size,), generator=generator),
        reward=torch.randn(size, generator=generator),
        next_obs=torch.randn(size, 3, generator=generator),
        bootstrap=torch.tensor([0.99, 0.0, 0.99, 0.9801, 0.0, 0.99])[:size],
        weights=torch.rand(size, generator=generator) + 0.5,
    )


@pytest.mark.parametrize("double", [False, True])
def test_targets_match_the_formula(double: bool) -> None:
    agent = learner(double)
    with torch.no_grad():  # make the target network differ from the online one
        for parameter in agent.target.parameters():
            parameter.add_(0.3)
    sample = batch()
    target_q = agent.target(sample.next_obs)
    if double:
        chosen = agent.online(sample.next_obs).argmax(1)
        best = target_q[torch.arange(6), chosen]
    else:
        best = target_q.max(1).values
    expected = sample.reward + sample.bootstrap * best
    torch.testing.assert_close(agent.targets(sample), expected)
    # A terminal transition's target is its reward alone.
    assert agent.targets(sample)[1] == sample.reward[1]


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_one_step_descends_the_weighted_loss(loss: str) -> None:
    agent, reference = learner(True, loss), learner(True, loss)
    sample = batch()
    target = reference.targets(sample)
    q = reference.online(sample.obs)[torch.arange(6), sample.action]
    per_example = (
        functional.smooth_l1_loss(q, target, reduction="none") if loss == "huber"
        else (q - target) ** 2
    )  # fmt: skip
    expected = (sample.weights * per_example).mean()
    value, q_mean, errors = agent.learn(sample)
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(errors, (q - target).detach())
    torch.testing.assert_close(q_mean, q.mean().detach())
    # Same gradient as plain autograd on the reference, then the same Adam step.
    expected.backward()
    reference.optimizer.step()
    for mine, theirs in zip(agent.online.parameters(), reference.online.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_target_updates_copy_or_average() -> None:
    agent = learner(True)
    with torch.no_grad():
        for parameter in agent.online.parameters():
            parameter.add_(1.0)
    before = [p.clone() for p in agent.target.parameters()]
    agent.update_target(0.25)
    for old, new, online in zip(before, agent.target.parameters(), agent.online.parameters(),
                                strict=True):  # fmt: skip
        torch.testing.assert_close(new, 0.75 * old + 0.25 * online)
    agent.update_target(1.0)
    for new, online in zip(agent.target.parameters(), agent.online.parameters(), strict=True):
        assert torch.equal(new, online)
    assert not any(p.requires_grad for p in agent.target.parameters())


def test_epsilon_greedy_draws() -> None:
    agent = learner(True)
    obs = torch.randn(4000, 3)
    greedy = agent.online(obs).argmax(1)
    assert torch.equal(agent.act(obs, 0.0), greedy)
    explored = agent.act(obs, 0.5)
    # Half the actions are random, a quarter of those happen to be the greedy one: 62.5% agree.
    assert (explored == greedy).float().mean().item() == pytest.approx(0.625, abs=0.03)
    assert set(agent.act(obs, 1.0).tolist()) == {0, 1, 2, 3}


def test_dueling_head_is_value_plus_centred_advantage() -> None:
    network = QNetwork(3, 4, [8], dueling=True)
    obs = torch.randn(5, 3)
    features = network.body(obs)
    advantage = network.advantage(features)
    expected = network.value(features) + advantage - advantage.mean(1, keepdim=True)
    torch.testing.assert_close(network(obs), expected)
    # The mean over actions is the value stream alone.
    torch.testing.assert_close(network(obs).mean(1), network.value(features).squeeze(1))

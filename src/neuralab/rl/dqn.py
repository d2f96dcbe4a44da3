"""Deep Q-learning (Mnih et al. 2015) with the improvements that pay on small control tasks:
Double DQN's target (van Hasselt et al. 2016), dueling heads (in network.py), n-step returns
(in nstep.py) and prioritized replay (in replay.py). The agent acts ε-greedily and learns from
replayed batches against a target network that follows the online one by copies or Polyak
averaging."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional

from neuralab.rl.replay import Sample


class DQN:
    """An online Q-network, its target copy and their optimizer.

    Args:
        network: the online Q-network (observations → Q-values per action).
        lr: Adam's learning rate.
        double: Double DQN's target (the online network picks, the target rates).
        loss: "huber" (smooth L1, δ=1) or "mse" on the TD error.
        grad_clip: gradient norm limit, or None.
        generator: the run's generator (ε-greedy draws).
    """

    def __init__(
        self,
        network: nn.Module,
        lr: float,
        double: bool,
        loss: str,
        grad_clip: float | None,
        generator: torch.Generator,
    ) -> None:
        self.online = network
        self.target = copy.deepcopy(network).requires_grad_(False)
        # fused: one kernel for all parameters; on a small Q-network the per-tensor loop of
        # the default implementation costs more than the arithmetic.
        self.optimizer = torch.optim.Adam(network.parameters(), lr=lr, fused=True)
        self.double, self.loss_name, self.grad_clip = double, loss, grad_clip
        self.parameters = list(network.parameters())  # clipping walks them every update
        self.generator = generator
        self.actions = network.advantage.out_features

    def act(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """ε-greedy actions (N,) for observations (N, *obs_shape)."""
        with torch.inference_mode():
            greedy = self.online(obs).argmax(dim=1)
        if epsilon <= 0.0:
            return greedy
        explore = torch.rand(len(obs), generator=self.generator) < epsilon
        random = torch.randint(self.actions, (len(obs),), generator=self.generator)
        return torch.where(explore, random, greedy)

    def targets(self, sample: Sample) -> torch.Tensor:
        """r + bootstrap · Q_target(s', a*) with a* from the online network (Double DQN) or the
        target's own argmax."""
        with torch.no_grad():
            next_values = self.target(sample.next_obs)  # (B, actions)
            if self.double:
                chosen = self.online(sample.next_obs).argmax(dim=1, keepdim=True)
                best_next = next_values.gather(1, chosen).squeeze(1)
            else:
                best_next = next_values.max(dim=1).values
            return sample.reward + sample.bootstrap * best_next

    def learn(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One gradient step on a replayed batch. Returns (loss, mean Q of the taken actions,
        TD errors (B,)) as detached tensors: reading them is left to the caller, so the loop
        does not wait on a float every step."""
        target = self.targets(sample)
        chosen = self.online(sample.obs).gather(1, sample.action.unsqueeze(1)).squeeze(1)
        errors = chosen - target
        reduction = "mean" if sample.weights is None else "none"
        if self.loss_name == "huber":
            loss = functional.smooth_l1_loss(chosen, target, reduction=reduction)
        else:
            loss = functional.mse_loss(chosen, target, reduction=reduction)
        if sample.weights is not None:  # prioritized replay's importance weights
            loss = (sample.weights * loss).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.optimizer.step()
        return loss.detach(), chosen.detach().mean(), errors.detach()

    def update_target(self, tau: float) -> None:
        """target ← online (tau 1) or target ← (1 - tau)·target + tau·online."""
        with torch.no_grad():
            for target, online in zip(
                self.target.parameters(), self.online.parameters(), strict=True
            ):
                target.lerp_(online, tau)  # tau 1 copies

    def state_dict(self) -> dict:
        return {
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])

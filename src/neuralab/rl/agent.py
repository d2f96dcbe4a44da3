"""An agent as built from its config: the Q-network and DQN learner, the replay buffer, the
n-step writer, the run's random generator, and the counters that schedule everything. Its
`state_dict` is the whole of what a resumed run needs besides the environments."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from neuralab.config.rl import RLConfig
from neuralab.rl.dqn import DQN
from neuralab.rl.envs import EnvSpec
from neuralab.rl.network import QNetwork, network_arguments
from neuralab.rl.nstep import NStepWriter
from neuralab.rl.replay import PrioritizedReplay, ReplayBuffer


@dataclass
class Counters:
    """Where a run is: environment steps, gradient updates, learning phases and target updates
    done, episodes finished, evaluation results and time spent learning (evaluation and saving
    excluded)."""

    steps: int = 0
    updates: int = 0
    phases: int = 0
    target_updates: int = 0
    episodes: int = 0
    evaluations: int = 0
    saves: int = 0
    resumes: int = 0
    best_return: float | None = None
    best_step: int | None = None
    train_seconds: float = 0.0


@dataclass
class Records:
    """What the run writes out: one row per evaluation and one per finished episode."""

    history: list[dict] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)


def build_network(spec: EnvSpec, config: RLConfig) -> tuple[QNetwork, dict]:
    """The Q-network for `spec`, initialised from the run's seed, and its stored arguments."""
    arguments = network_arguments(
        spec.obs_shape, spec.actions, config.agent.hidden, config.agent.dueling
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        return QNetwork(**arguments), arguments


class Agent:
    """Everything that learns, built from the config and the environment's spec."""

    def __init__(self, config: RLConfig, spec: EnvSpec) -> None:
        self.config, self.spec = config, spec
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.network, self.network_arguments = build_network(spec, config)
        learn = config.optim
        self.dqn = DQN(
            self.network, learn.lr, config.agent.double, learn.loss, learn.grad_clip,
            self.generator,
        )  # fmt: skip
        replay = config.replay
        if replay.prioritized:
            self.buffer: ReplayBuffer = PrioritizedReplay(
                replay.capacity, spec.obs_shape, self.generator, replay.alpha, replay.beta
            )
        else:
            self.buffer = ReplayBuffer(replay.capacity, spec.obs_shape, self.generator)
        self.nstep = NStepWriter(config.agent.n_step, config.agent.gamma, config.env.num_envs)
        self.counters = Counters()
        self.records = Records()

    def epsilon(self) -> float:
        """ε falls linearly from eps_start to eps_end over `fraction` of the run's steps."""
        explore = self.config.explore
        horizon = explore.fraction * self.config.train.steps
        progress = min(1.0, self.counters.steps / horizon)
        return explore.eps_start + progress * (explore.eps_end - explore.eps_start)

    def anneal_beta(self) -> None:
        """Prioritized replay's importance exponent rises from beta to 1 over the run."""
        if isinstance(self.buffer, PrioritizedReplay):
            start = self.config.replay.beta
            progress = min(1.0, self.counters.steps / self.config.train.steps)
            self.buffer.beta = start + progress * (1.0 - start)

    def learn_phase(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The config's gradient steps on replayed batches; (summed loss, summed Q) or None
        before learning starts."""
        if self.counters.steps < self.config.replay.learning_starts or len(self.buffer) == 0:
            return None
        self.anneal_beta()
        loss_sum = torch.zeros(())
        q_sum = torch.zeros(())
        for _ in range(self.config.optim.gradient_steps):
            sample = self.buffer.sample(self.config.replay.batch_size)
            loss, q_mean, errors = self.dqn.learn(sample)
            self.buffer.update_priorities(sample.indices, errors)
            loss_sum += loss
            q_sum += q_mean
        self.counters.updates += self.config.optim.gradient_steps
        return loss_sum, q_sum

    def state_dict(self) -> dict:
        return {
            "dqn": self.dqn.state_dict(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "counters": asdict(self.counters),
            "history": self.records.history,
            "episodes": self.records.episodes,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved state into this freshly built agent (the online weights are the
        checkpoint's model.safetensors, loaded by the caller)."""
        self.dqn.load_state_dict(state["dqn"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self.counters = Counters(**state["counters"])
        self.records = Records(list(state["history"]), list(state["episodes"]))

"""The configuration of a reinforcement-learning run (`neuralab rl train`): the environment, the
agent's network and targets, the replay buffer, exploration, the optimizer and the loop's
budget. Read like the classifier's RunConfig: recipe (in `recipes/rl/`) ← flags ← `--set`."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, model_validator

from neuralab.config.files import apply_override, build_config, parse_override, read_recipe
from neuralab.config.sections import Section
from neuralab.errors import ConfigError

RL_RECIPES = "recipes/rl"  # where the agent recipes ship inside the package


class EnvConfig(Section):
    # A Gymnasium id (any registered one, the user's own included: `module:Env-v0` imports the
    # module that registers it first).
    id: str = "CartPole-v1"
    num_envs: int = Field(1, ge=1)  # environments stepped together (Gymnasium's vector API)
    # sync: one process steps them in turn; async: one process each, stepping while the
    # network learns (pays off when an environment step is slow).
    vectorization: Literal["sync", "async"] = "sync"
    max_episode_steps: int | None = Field(None, ge=1)  # None: the environment's own limit
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of gymnasium.make


class AgentConfig(Section):
    algo: Literal["dqn"] = "dqn"
    hidden: list[int] = Field(default_factory=lambda: [256, 256])  # the Q-network's layers
    dueling: bool = False  # separate value and advantage streams (Wang et al. 2016)
    double: bool = True  # the online network picks the next action, the target rates it
    n_step: int = Field(1, ge=1)  # rewards summed before bootstrapping
    gamma: float = Field(0.99, gt=0.0, le=1.0)  # discount per environment step


class ReplayConfig(Section):
    capacity: int = Field(100_000, ge=1)  # transitions kept (the oldest are overwritten)
    prioritized: bool = False  # sample by TD error (Schaul et al. 2016) through a sum tree
    alpha: float = Field(0.6, ge=0.0)  # priority exponent (0: uniform)
    beta: float = Field(0.4, ge=0.0, le=1.0)  # importance-weight exponent, annealed to 1
    batch_size: int = Field(64, ge=1)
    learning_starts: int = Field(1000, ge=0)  # environment steps before the first update


class ExploreConfig(Section):
    eps_start: float = Field(1.0, ge=0.0, le=1.0)  # ε-greedy: chance of a random action
    eps_end: float = Field(0.05, ge=0.0, le=1.0)
    fraction: float = Field(0.1, gt=0.0, le=1.0)  # of train.steps over which ε falls linearly


class LearnConfig(Section):
    lr: float = Field(1e-3, gt=0.0)  # Adam's learning rate
    train_freq: int = Field(4, ge=1)  # environment steps between learning phases
    gradient_steps: int = Field(1, ge=1)  # updates per learning phase
    grad_clip: float | None = Field(10.0, gt=0.0)  # gradient norm limit; None: no clipping
    target_update: int = Field(1000, ge=1)  # environment steps between target updates
    tau: float = Field(1.0, gt=0.0, le=1.0)  # 1: copy the online network; <1: Polyak average
    loss: Literal["huber", "mse"] = "huber"


class LoopConfig(Section):
    steps: int = Field(50_000, ge=1)  # environment steps (over all vector envs)
    seed: int = 0
    eval_every: int = Field(5_000, ge=1)  # environment steps between greedy evaluations
    eval_episodes: int = Field(10, ge=1)
    # Which weights the run's checkpoint/ carries as its result: the network that scored best
    # in the periodic evaluations (kept in best/) or simply the last one.
    keep: Literal["best", "last"] = "best"
    final_episodes: int = Field(100, ge=0)  # greedy episodes scored at the end (metrics.json)
    checkpoint_every: int = Field(10_000, ge=1)  # environment steps between resumable saves
    threads: int | None = Field(None, ge=1)  # torch threads; None: 1 (small networks, measured)
    progress: Literal["auto", "bar", "plain", "none"] = "auto"
    tensorboard: bool = True  # event files when tensorboard is installed


class RLConfig(Section):
    """Everything that defines an agent's run. `--set replay.prioritized=true` edits one field."""

    free_form: ClassVar[set[tuple[str, ...]]] = {("env", "options")}

    description: str = ""
    recipe: str | None = None
    env: EnvConfig = Field(default_factory=EnvConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    explore: ExploreConfig = Field(default_factory=ExploreConfig)
    optim: LearnConfig = Field(default_factory=LearnConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    out: str | None = None  # run directory; None: runs/<env>-<algo>-<time>

    @model_validator(mode="after")
    def consistent(self) -> RLConfig:
        if self.replay.batch_size > self.replay.capacity:
            raise ValueError(
                f"replay.batch_size {self.replay.batch_size} exceeds replay.capacity "
                f"{self.replay.capacity}"
            )
        if self.explore.eps_end > self.explore.eps_start:
            raise ValueError("explore.eps_end must not exceed explore.eps_start")
        return self


# Keyword → field for `neuralab.rl.train(env=..., steps=...)` and the CLI's flags.
RL_SHORTCUTS = {
    "env": "env.id",
    "algo": "agent.algo",
    "steps": "train.steps",
    "seed": "train.seed",
    "num_envs": "env.num_envs",
    "lr": "optim.lr",
    "out": "out",
}


def resolve_rl_config(
    recipe: str | None = None, overrides: list[str] | None = None, **shortcuts: Any
) -> RLConfig:
    """Recipe (shipped name or YAML path) ← shortcut keywords ← `--set` overrides, validated.

    Example:
        >>> resolve_rl_config("cartpole-dqn", ["train.steps=1000"], seed=3).train.seed
        3
    """
    raw, origin = read_recipe(recipe, RL_RECIPES) if recipe else ({}, "defaults")
    if recipe:
        raw.setdefault("recipe", recipe)
    for keyword, value in shortcuts.items():
        if keyword not in RL_SHORTCUTS:
            raise ConfigError(
                f"unknown setting {keyword!r}; valid: {', '.join(RL_SHORTCUTS)} "
                "(or overrides=['section.field=value'])"
            )
        if value is not None:
            apply_override(raw, RL_SHORTCUTS[keyword].split("."), value, RLConfig)
    for text in overrides or []:
        path, value = parse_override(text)
        apply_override(raw, path, value, RLConfig)
    return build_config(raw, origin, RLConfig)


def dump_rl_config(config: RLConfig) -> str:
    """The resolved config as YAML (the run directory's config.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)

"""Environments from Gymnasium (the `rl` extra, imported only here and only when needed):
checked once for what DQN can learn, then made as a vector of copies or as a single one."""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuralab.errors import UserError

INSTALL = "pip install 'neuralab[rl]'"  # gymnasium with Box2D (LunarLander) and rendering


class EnvError(UserError, ValueError):
    """An environment that cannot be made, or that the chosen algorithm cannot learn."""


def gymnasium():
    """The gymnasium module, or an ImportError that gives the install line."""
    try:
        return importlib.import_module("gymnasium")
    except ImportError as error:
        raise ImportError(
            f"reinforcement learning needs Gymnasium, which is not installed; {INSTALL}",
            name="gymnasium",
        ) from error


@dataclass(frozen=True)
class EnvSpec:
    """What the agent's network adapts to."""

    id: str
    obs_shape: tuple[int, ...]
    actions: int

    def to_dict(self) -> dict:
        return {"id": self.id, "obs_shape": list(self.obs_shape), "actions": self.actions}


def registered_id(env_id: str) -> str:
    """`env_id` after importing the module of a `module:Env-v0` id; an unknown id is refused
    with the closest registered names."""
    gym = gymnasium()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise EnvError(
                f"environment {env_id!r}: cannot import module {module!r} ({error}); "
                "the part before ':' must be an importable module that registers the id"
            ) from None
    if name not in gym.registry:
        close = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise EnvError(
            f"unknown environment {name!r}.{hint} Registered ids are listed by "
            '`python -c "import gymnasium; gymnasium.pprint_registry()"`; your own '
            "environment is used as 'your_module:YourEnv-v0' once the module registers it"
        )
    return name


def make_env(env_id: str, options: dict[str, Any], max_steps: int | None, render: bool = False):
    """One environment (evaluation, recording). Box2D and rendering failures name the extra."""
    gym = gymnasium()
    name = registered_id(env_id)
    extra = {"render_mode": "rgb_array"} if render else {}
    if render:  # frames are drawn off screen: no window, no sound device (SDL's complaints)
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        return gym.make(name, max_episode_steps=max_steps, **extra, **options)
    except gym.error.DependencyNotInstalled as error:
        raise ImportError(f"{name}: {error}; {INSTALL}", name="gymnasium") from None
    except TypeError as error:
        raise EnvError(
            f"environment {name!r} refused its options {options} ({error}); "
            "env.options are keyword arguments of gymnasium.make"
        ) from None


def describe(env, env_id: str) -> EnvSpec:
    """The observation shape and number of actions, refusing what DQN cannot learn."""
    gym = gymnasium()
    actions, observations = env.action_space, env.observation_space
    if not isinstance(actions, gym.spaces.Discrete):
        raise EnvError(
            f"environment {env_id!r} has a {type(actions).__name__} action space "
            f"({actions}); DQN picks one of a finite set of actions, so it needs a Discrete "
            "space. Continuous control fits actor-critic algorithms (SAC, TD3, PPO), which "
            "neuralab does not have yet; use a discrete variant (e.g. LunarLander-v3 rather "
            "than LunarLanderContinuous) or Stable-Baselines3's SAC"
        )
    if not isinstance(observations, gym.spaces.Box):
        raise EnvError(
            f"environment {env_id!r} has a {type(observations).__name__} observation space; "
            "neuralab's Q-network reads a Box of numbers (wrap the environment with "
            "gymnasium.wrappers.FlattenObservation for Discrete or Dict observations)"
        )
    return EnvSpec(env_id, tuple(int(size) for size in observations.shape), int(actions.n))


def make_vector(
    env_id: str, num_envs: int, mode: str, options: dict[str, Any], max_steps: int | None
):
    """`num_envs` copies stepped together. Same-step autoreset: a finished episode's final
    observation comes in info["final_obs"] and the returned one already starts the next."""
    gym = gymnasium()
    name = registered_id(env_id)  # the caller made one with make_env first: errors said there

    def one():
        return gym.make(name, max_episode_steps=max_steps, **options)

    if num_envs == 1 and mode == "sync":
        return OneEnv(one())
    vector = gym.vector.AsyncVectorEnv if mode == "async" else gym.vector.SyncVectorEnv
    return vector([one] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class OneEnv:
    """One environment behind the vector interface the loop uses (batched arrays, same-step
    autoreset with the last observation in info["final_obs"]). SyncVectorEnv does the same for
    any number, at ~50 µs of bookkeeping a step: a fifth of a CartPole step's whole cost."""

    def __init__(self, env) -> None:
        self.env = env

    def reset(self, seed: list[int] | None = None):
        obs, info = self.env.reset(seed=None if seed is None else seed[0])
        return np.asarray(obs)[None], info

    def step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(actions[0])
        info = {}
        if terminated or truncated:
            info = {"final_obs": [obs]}
            obs, _ = self.env.reset()
        return (
            np.asarray(obs)[None],
            np.array([reward], dtype=np.float64),
            np.array([terminated]),
            np.array([truncated]),
            info,
        )

    def close(self) -> None:
        self.env.close()

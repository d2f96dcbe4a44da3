"""Reinforcement learning: DQN agents on Gymnasium environments, with their own loop (act,
replay, learn, evaluate) and the same run directories, checkpoints, progress and reports as
every neuralab run.

    >>> import neuralab
    >>> run = neuralab.rl.train("cartpole-dqn", seed=1)          # doctest: +SKIP
    >>> neuralab.rl.evaluate(run.run_dir, episodes=100)           # doctest: +SKIP

Gymnasium is the `rl` extra (`pip install 'neuralab[rl]'`), imported only when an environment
is made.
"""

from neuralab.config.rl import RLConfig, resolve_rl_config
from neuralab.rl.envs import EnvError
from neuralab.rl.loop import AgentRun, AgentStopped
from neuralab.rl.verbs import evaluate, play, train

__all__ = [
    "AgentRun",
    "AgentStopped",
    "EnvError",
    "RLConfig",
    "evaluate",
    "play",
    "resolve_rl_config",
    "train",
]

"""`neuralab rl train|evaluate|play`: agents on Gymnasium environments (neuralab.rl)."""

from __future__ import annotations

import argparse
import json

from neuralab.config.files import recipe_names
from neuralab.config.rl import RL_RECIPES


def add_rl(commands) -> None:
    """Add `neuralab rl` and its verbs to the CLI's subcommands."""
    parser = commands.add_parser(
        "rl",
        help="reinforcement learning: train, evaluate and record DQN agents (Gymnasium)",
        description="Agents that learn by acting in Gymnasium environments (the `rl` extra: "
        "pip install 'neuralab[rl]'). Runs are directories like every neuralab run; "
        "`neuralab serve RUN` serves an agent too.",
    )
    verbs = parser.add_subparsers(dest="rl_command", required=True, metavar="VERB")
    add_rl_train(verbs)
    add_rl_evaluate(verbs)
    add_rl_play(verbs)


def add_rl_train(verbs) -> None:
    parser = verbs.add_parser(
        "train",
        help="train a DQN agent",
        description="Train a DQN agent from a recipe and/or settings, or resume a run. "
        f"Recipes: {', '.join(recipe_names(RL_RECIPES))}.",
        epilog="example: neuralab rl train --recipe cartpole-dqn --seed 3 "
        "--set replay.prioritized=true",
    )
    parser.add_argument("--recipe", help="a shipped recipe name or a YAML file")
    parser.add_argument("--env", help="a Gymnasium id, e.g. LunarLander-v3 or my_pkg:MyEnv-v0")
    parser.add_argument("--algo", help="the algorithm (dqn)")
    parser.add_argument("--steps", type=int, help="environment steps to train for")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--num-envs", type=int, help="environments stepped together")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", help="run directory (default runs/<env>-<algo>-<time>)")
    parser.add_argument(
        "--resume", metavar="RUN", help="continue RUN from its last checkpoint (buffer included)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set agent.dueling=true (repeatable)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    parser.set_defaults(handler=run_rl_train)


def run_rl_train(args: argparse.Namespace) -> int:
    from neuralab import rl

    run = rl.train(
        args.recipe,
        args.overrides,
        resume=args.resume,
        env=args.env,
        algo=args.algo,
        steps=args.steps,
        seed=args.seed,
        num_envs=args.num_envs,
        lr=args.lr,
        out=args.out,
    )
    if args.json:
        print(json.dumps({"run": str(run.run_dir), **run.metrics}, indent=2))
    return 0


def add_rl_evaluate(verbs) -> None:
    parser = verbs.add_parser(
        "evaluate",
        help="greedy return over N episodes",
        description="Play N greedy episodes (seeds SEED, SEED+1, ...) with the run's result "
        "network (best/ when the run keeps the best evaluation, else checkpoint/): mean ± std "
        "return and the success rate against the environment's threshold.",
    )
    parser.add_argument("run_dir", metavar="RUN")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2_000_000, help="first episode's seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_rl_evaluate)


def run_rl_evaluate(args: argparse.Namespace) -> int:
    from neuralab import rl

    result = rl.evaluate(args.run_dir, episodes=args.episodes, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    solved = (
        f", {result['success_rate']:.0%} of episodes ≥ {result['reward_threshold']:g}"
        if "success_rate" in result
        else ""
    )
    print(
        f"{result['env']}: return {result['return_mean']:.1f} ± {result['return_std']:.1f} "
        f"(min {result['return_min']:.1f}, max {result['return_max']:.1f}) over "
        f"{result['episodes']} episodes{solved}; weights {result['weights']}"
    )
    return 0


def add_rl_play(verbs) -> None:
    parser = verbs.add_parser(
        "play",
        help="record one greedy episode as a GIF or MP4",
        description="Record one greedy episode of the run's result network as a GIF "
        "(Pillow) or an MP4 (needs imageio[ffmpeg]).",
    )
    parser.add_argument("run_dir", metavar="RUN")
    parser.add_argument("--out", required=True, help="the .gif or .mp4 file to write")
    parser.add_argument("--seed", type=int, default=2_000_000, help="the episode's seed")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th frame")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--scale", type=float, default=1.0, help="resize frames by this factor")
    parser.set_defaults(handler=run_rl_play)


def run_rl_play(args: argparse.Namespace) -> int:
    from neuralab import rl

    path, total = rl.play(
        args.run_dir, args.out, seed=args.seed, every=args.every, fps=args.fps, scale=args.scale
    )
    print(f"wrote {path}: one episode, return {total:.1f}")
    return 0

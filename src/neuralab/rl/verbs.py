"""The agent verbs as Python functions: `neuralab.rl.train`, `evaluate` and `play` (the
command line's `neuralab rl train|evaluate|play` call these)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from neuralab.checkpoint.format import write_text_atomic
from neuralab.config.files import apply_override, build_config, parse_override
from neuralab.config.rl import RL_SHORTCUTS, RLConfig, dump_rl_config, resolve_rl_config
from neuralab.errors import ConfigError
from neuralab.rl.agent import Agent
from neuralab.rl.evaluate import FINAL_SEEDS, evaluate_policy, record_episode
from neuralab.rl.loop import AgentRun, Loop, build_agent
from neuralab.rl.runs import (
    env_from_meta,
    last_saved_step,
    load_agent_network,
    new_agent_dir,
    read_raw_config,
    restore,
    result_folder,
)

MEDIA_SUFFIXES = (".gif", ".mp4")


def train(
    recipe: str | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    **shortcuts,
) -> AgentRun:
    """Train an agent from a recipe (`cartpole-dqn`, ...) and/or settings, or resume a run.

    Example:
        >>> run = neuralab.rl.train("cartpole-dqn", seed=1)          # doctest: +SKIP
        >>> run.metrics["final"]["return_mean"]                       # doctest: +SKIP
        500.0
    """
    if resume is not None:
        if recipe is not None:
            raise ConfigError("--resume continues a run with its own config; drop --recipe")
        run_dir = Path(resume).expanduser()
        config = resumed_config(run_dir, overrides, shortcuts)
    else:
        config = resolve_rl_config(recipe, overrides, **shortcuts)
    agent = build_agent(config)  # a bad environment is refused before any folder is made
    if resume is not None:
        restore(run_dir, agent)
        agent.counters.resumes += 1
        write_text_atomic(run_dir / "config.yaml", dump_rl_config(config))
        log(
            f"resume step {agent.counters.steps:,}: replay buffer {len(agent.buffer):,} "
            "transitions, network, target, optimizer and counters restored; environments "
            "start new episodes"
        )
    else:
        run_dir = new_agent_dir(config.out, config, dump_rl_config(config))
    log(describe_run(config, agent, run_dir))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.train.threads or 1)  # small networks: one thread is fastest
    try:
        loop = Loop(config, agent, run_dir)
        try:
            loop.run()
            metrics = loop.final_evaluation()
        finally:
            loop.close()
    finally:
        torch.set_num_threads(previous_threads)
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    log(final_line(metrics, run_dir))
    return AgentRun(run_dir, metrics, agent.records.history)


def resumed_config(run_dir: Path, overrides: list[str] | None, shortcuts: dict) -> RLConfig:
    """The run's own config with train.* changes (a longer budget, say) applied."""
    raw = read_raw_config(run_dir)
    changes = [parse_override(text) for text in overrides or []]
    changes += [
        (RL_SHORTCUTS[key].split("."), value)
        for key, value in shortcuts.items()
        if value is not None
    ]
    for key_path, value in changes:
        if key_path[0] != "train":
            raise ConfigError(
                f"--set {'.'.join(key_path)}: a resumed run keeps its environment, agent, replay "
                "and optimizer settings; only train.* may change (e.g. train.steps)"
            )
        apply_override(raw, key_path, value, RLConfig)
    config = build_config(raw, str(run_dir / "config.yaml"), RLConfig)
    saved = last_saved_step(run_dir)
    if saved is not None and saved >= config.train.steps:
        raise ConfigError(
            f"{run_dir} already reached step {saved:,} of train.steps {config.train.steps:,}; "
            "raise it to continue, e.g. --set train.steps=" + str(2 * config.train.steps)
        )
    return config


def describe_run(config: RLConfig, agent: Agent, run_dir: Path) -> str:
    agent_config, replay = config.agent, config.replay
    extras = [name for name, on in (("double", agent_config.double),
                                     ("dueling", agent_config.dueling)) if on]  # fmt: skip
    if agent_config.n_step > 1:
        extras.append(f"{agent_config.n_step}-step")
    kind = "prioritized" if replay.prioritized else "uniform"
    return (
        f"agent  {agent_config.algo} ({', '.join(extras) or 'plain'}) on {config.env.id} × "
        f"{config.env.num_envs}: observations {agent.spec.obs_shape}, {agent.spec.actions} "
        f"actions, layers {agent_config.hidden}; {kind} replay of {replay.capacity:,}; "
        f"{config.train.steps:,} steps\nrun    {run_dir}"
    )


def final_line(metrics: dict, run_dir: Path) -> str:
    final = metrics.get("final")
    if final is None:
        return f"done   {metrics['steps']:,} steps in {metrics['train_seconds']:.1f} s; {run_dir}"
    return (
        f"done   {metrics['steps']:,} steps, {metrics['train_seconds']:.1f} s learning; "
        f"{metrics['weights']}/ network over {final['episodes']} new episodes: return "
        f"{final['return_mean']:.1f} ± {final['return_std']:.1f}; {run_dir}"
    )


def evaluate(run: str | Path, episodes: int = 100, seed: int = FINAL_SEEDS) -> dict:
    """Greedy return over `episodes` episodes seeded seed, seed+1, …: mean ± std, min, max,
    and the success rate against the environment's reward threshold when it has one."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {episodes}")
    folder = result_folder(run)
    network, meta = load_agent_network(folder)
    env = env_from_meta(meta)
    try:
        threshold = env.spec.reward_threshold if env.spec else None
        summary = evaluate_policy(network, env, episodes, seed).summary(threshold)
    finally:
        env.close()
    return {"run": str(run), "weights": str(folder), "env": meta["env"]["id"], **summary}


def play(
    run: str | Path, out: str | Path, seed: int = FINAL_SEEDS, every: int = 1, fps: int = 30,
    scale: float = 1.0,
) -> tuple[Path, float]:  # fmt: skip
    """Record one greedy episode as a GIF (or MP4 with imageio-ffmpeg); returns the file and
    the episode's return. `every` keeps every n-th frame, `scale` resizes them."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in MEDIA_SUFFIXES:
        raise ConfigError(f"--out {out}: give a .gif or .mp4 file name")
    if every < 1 or fps < 1 or not 0 < scale <= 4:
        raise ConfigError("--every and --fps must be at least 1 and --scale within (0, 4]")
    network, meta = load_agent_network(result_folder(run))
    env = env_from_meta(meta, render=True)
    try:
        frames, total = record_episode(network, env, seed, every)
    finally:
        env.close()
    write_media(frames, out, fps, scale)
    return out, total


def write_media(frames: list, out: Path, fps: int, scale: float) -> None:
    """Frames (H, W, 3 uint8) → a GIF (Pillow) or MP4 (imageio-ffmpeg), written beside `out`
    and renamed into place, so a failure leaves no half-written file."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    if scale != 1.0:
        size = (round(images[0].width * scale), round(images[0].height * scale))
        images = [image.resize(size, Image.Resampling.BILINEAR) for image in images]
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    os.close(handle)
    try:
        if out.suffix.lower() == ".gif":
            images[0].save(
                temporary, save_all=True, append_images=images[1:], duration=round(1000 / fps),
                loop=0, optimize=True,
            )  # fmt: skip
        else:
            write_mp4(images, temporary, fps)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's file is private; a result is not
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_mp4(images: list, path: str, fps: int) -> None:
    try:
        import imageio.v3 as imageio
        import numpy as np
    except ImportError as error:
        raise ImportError(
            "an .mp4 needs imageio with ffmpeg: pip install 'imageio[ffmpeg]' (or ask for a .gif)",
            name="imageio",
        ) from error
    imageio.imwrite(path, np.stack([np.asarray(image) for image in images]), fps=fps)

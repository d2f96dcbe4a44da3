"""An agent run's figures: return per training episode (and its running mean), the greedy
evaluation return with its spread, and the TD loss and mean Q per evaluation interval."""

from __future__ import annotations

from pathlib import Path

from neuralab.inference import plots

SMOOTHING = 20  # episodes in the running mean drawn over the raw returns


def running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def draw_agent_curves(run_dir: Path, history: list[dict], episodes: list[dict]) -> Path | None:
    """<run>/curves.png, or None when matplotlib is missing or nothing was recorded."""
    if not plots.have_matplotlib() or not history:
        return None
    figure = plots.new_figure(11, 3.2)
    returns_panel, eval_panel, loss_panel = figure.subplots(1, 3)
    if episodes:
        steps = [row["step"] for row in episodes]
        returns = [row["return"] for row in episodes]
        returns_panel.plot(steps, returns, ".", alpha=0.25, markersize=3, label="episode")
        returns_panel.plot(steps, running_mean(returns, SMOOTHING), label=f"mean of {SMOOTHING}")
        returns_panel.legend()
    returns_panel.set(title="training return (ε-greedy)", xlabel="environment steps")
    steps = [row["step"] for row in history]
    mean = [row["eval_return_mean"] for row in history]
    spread = [row["eval_return_std"] for row in history]
    eval_panel.plot(steps, mean, "o-")
    low = [m - s for m, s in zip(mean, spread, strict=True)]
    high = [m + s for m, s in zip(mean, spread, strict=True)]
    eval_panel.fill_between(steps, low, high, alpha=0.2)
    eval_panel.set(title="greedy evaluation return (± std)", xlabel="environment steps")
    learned = [row for row in history if row.get("loss") is not None]
    loss_panel.plot([r["step"] for r in learned], [r["loss"] for r in learned], "o-", label="loss")
    loss_panel.set(title="TD loss", xlabel="environment steps")
    if learned:
        loss_panel.set_yscale("log")
    q_axis = loss_panel.twinx()
    q_axis.plot([r["step"] for r in learned], [r["q"] for r in learned], "s-", color="tab:orange")
    q_axis.set_ylabel("mean Q of taken actions", color="tab:orange")
    for axis in (returns_panel, eval_panel, loss_panel):
        axis.grid(alpha=0.3)
    path = run_dir / "curves.png"
    figure.savefig(path)
    return path

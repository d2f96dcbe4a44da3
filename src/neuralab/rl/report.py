"""An agent run's figures: return per training episode (and its running mean), the greedy
evaluation return with its spread, and the TD loss and mean Q per evaluation interval."""

from __future__ import annotations

import html
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


def write_agent_report(run_dir: Path) -> Path:
    """<run>/report.html of an agent's run: the final evaluation, curves.png (redrawn from the
    history), one row per evaluation and the configuration, in one self-contained page."""
    from neuralab.rl.runs import agent_records

    history, episodes, metrics = agent_records(run_dir)
    figure = draw_agent_curves(run_dir, history, episodes)
    escape = html.escape
    final = metrics.get("final")
    summary = (
        f"Final greedy evaluation of the <b>{escape(str(metrics.get('weights')))}/</b> network "
        f"over {final['episodes']} new episodes: return <b>{final['return_mean']:.1f} ± "
        f"{final['return_std']:.1f}</b> (min {final['return_min']:.1f}, max "
        f"{final['return_max']:.1f})"
        + (
            f", {final['success_rate']:.0%} at or above {final['reward_threshold']:g}"
            if "success_rate" in final
            else ""
        )  # fmt: skip
        + "."
        if final
        else "No final evaluation yet (the run is unfinished)."
    )
    rows = "".join(
        f"<tr><td>{row['step']:,}</td><td>{row['episodes']:,}</td><td>{row['seconds']:.1f}</td>"
        f"<td>{row['eval_return_mean']:.1f} ± {row['eval_return_std']:.1f}</td>"
        f"<td>{row['epsilon']:.3f}</td></tr>"
        for row in history
    )
    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
    picture = plots.embedded(figure) if figure else "<p>(matplotlib is not installed)</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neuralab agent {escape(run_dir.name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}
img{{max-width:100%}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style></head><body>
<h1>Agent {escape(run_dir.name)}: {escape(str(metrics.get("algo", "dqn")))} on
{escape(str(metrics.get("env", "?")))}</h1>
<p>{summary} {metrics.get("steps", "?")} environment steps, {metrics.get("episodes", "?")}
episodes, {metrics.get("train_seconds", "?")} s of learning (evaluation excluded).</p>
<h2>Curves</h2>{picture}
<h2>Evaluations</h2><table><tr><th>step</th><th>episodes</th><th>learning s</th>
<th>greedy return</th><th>ε</th></tr>{rows}</table>
<h2>Configuration</h2><pre>{escape(config)}</pre>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path

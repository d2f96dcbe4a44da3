"""Model summaries: shapes, parameter counts and FLOPs against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralab.cli.main import main
from neuralab.inference.summary import summarize
from neuralab.models import InputSpec, TextSpec, build_model


def test_linear_and_conv_flops_are_two_per_multiply_add() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    found = summarize(model, torch.zeros(1, 1, 8, 8))
    rows = {row.name: row for row in found.rows}
    assert rows["0"].output_shape == "1×4×6×6" and rows["0"].flops == 2 * 4 * 6 * 6 * 9
    assert rows["3"].flops == 2 * 144 * 10 and rows["3"].parameters == 144 * 10 + 10
    assert found.flops == sum(row.flops for row in found.rows)
    assert found.parameters == sum(p.numel() for p in model.parameters())


def test_recurrent_and_attention_flops_are_computed_from_their_sizes() -> None:
    lstm = build_model("lstm", TextSpec(100, 2, 10), embed_dim=8, hidden=6)
    rows = {row.name: row for row in summarize(lstm, torch.ones(1, 10, dtype=torch.long)).rows}
    assert rows["forward_layers.0"].flops == 2 * 4 * 6 * (8 + 6) * 10
    assert rows["backward_layers.0"].kind == "LSTM"
    encoder = build_model("transformer", TextSpec(100, 2, 10), embed_dim=8, heads=2, ff_dim=16)
    found = summarize(encoder, torch.ones(1, 10, dtype=torch.long))
    attention = next(r for r in found.rows if r.kind == "MultiheadAttention")
    assert attention.flops == 2 * 10 * 8 * 24 + 4 * 10 * 10 * 8 + 2 * 10 * 8 * 8
    assert found.flops == sum(row.flops for row in found.rows)


def test_summary_restores_training_mode_and_changes_no_weight() -> None:
    model = build_model("mnist_fast", InputSpec(1, 28, 28, 10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, torch.zeros(1, 1, 28, 28))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cli_summary_prints_the_table(capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    assert main(["summary", "mlp", "--data", "digits", "--set", "model.args.width=16"]) == 0
    out = capsys.readouterr().out
    assert "Linear" in out and "1×16" in out
    assert "1,210 parameters" in out and "per example" in out  # 64·16+16 + 16·10+10

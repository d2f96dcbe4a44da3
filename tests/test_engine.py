"""Engine choice: device errors, fixed settings kept, and `auto` picking the fastest candidate
(timings are replaced by fixed numbers, so nothing here depends on this machine's speed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuralab.train import engine
from neuralab.train.engine import Engine, choose_engine, pick_device, time_step


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def convnet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))


SAMPLE = torch.zeros(2, 1, 4, 4)
LABELS = torch.tensor([0, 1])
CPU = torch.device("cpu")


def test_auto_device_follows_cuda_availability(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_explicit_cuda_without_cuda_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="train.device='cuda:1'.*no CUDA device"):
        pick_device("cuda:1")
    assert pick_device("cpu") == CPU


def forbid_timing(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a fixed configuration must not be timed")

    monkeypatch.setattr(engine, "time_step", fail)


def test_fixed_precision_and_layout_are_kept_without_timing(monkeypatch) -> None:
    forbid_timing(monkeypatch)
    chosen = choose_engine(convnet(), SAMPLE, LABELS, CPU, "bf16", "on")
    assert (chosen.autocast_dtype, chosen.channels_last) == (torch.bfloat16, True)
    assert chosen.reason == "as configured"
    chosen = choose_engine(mlp(), SAMPLE, LABELS, CPU, "fp32", "auto")
    assert (chosen.autocast_dtype, chosen.channels_last) == (None, False)


def test_cpu_without_native_bf16_uses_fp32_untimed(monkeypatch) -> None:
    forbid_timing(monkeypatch)
    monkeypatch.setattr(engine, "cpu_flags", lambda: {"avx2"})
    chosen = choose_engine(mlp(), SAMPLE, LABELS, CPU)
    assert chosen.autocast_dtype is None
    assert "no native bf16" in chosen.reason


def test_auto_times_every_candidate_and_keeps_the_fastest(monkeypatch) -> None:
    monkeypatch.setattr(engine, "cpu_flags", lambda: {"avx512_bf16"})
    seconds = {
        (None, False): 0.4,
        (None, True): 0.3,
        (torch.bfloat16, False): 0.2,
        (torch.bfloat16, True): 0.5,
    }
    timed = []

    def fake_time(model, images, labels, dtype, channels_last):
        timed.append((dtype, channels_last))
        return seconds[(dtype, channels_last)]

    monkeypatch.setattr(engine, "time_step", fake_time)
    chosen = choose_engine(convnet(), SAMPLE, LABELS, CPU)
    assert sorted(timed, key=str) == sorted(list(seconds) * engine.TIMING_ROUNDS, key=str)
    assert (chosen.autocast_dtype, chosen.channels_last) == (torch.bfloat16, False)
    assert "bf16 200 ms" in chosen.reason
    timed.clear()
    choose_engine(mlp(), SAMPLE, LABELS, CPU)  # no convolutions: channels_last is not tried
    assert set(timed) == {(None, False), (torch.bfloat16, False)}


def test_bf16_must_beat_fp32_by_a_margin(monkeypatch) -> None:
    monkeypatch.setattr(engine, "cpu_flags", lambda: {"avx512_bf16"})
    seconds = {
        (None, False): 1.0,
        (None, True): 0.50,
        (torch.bfloat16, False): 2.0,
        (torch.bfloat16, True): 0.48,
    }  # bf16+cl only 4% faster: noise, keep fp32

    monkeypatch.setattr(engine, "time_step", lambda model, images, labels, d, c: seconds[(d, c)])
    chosen = choose_engine(convnet(), SAMPLE, LABELS, CPU)
    assert (chosen.autocast_dtype, chosen.channels_last) == (None, True)
    assert chosen.reason.endswith("bf16+cl is less than 10% faster than fp32+cl, so fp32")
    seconds[(torch.bfloat16, True)] = 0.40  # 20% faster: worth it
    chosen = choose_engine(convnet(), SAMPLE, LABELS, CPU)
    assert (chosen.autocast_dtype, chosen.channels_last) == (torch.bfloat16, True)
    assert chosen.reason.startswith("fastest of one-batch timings: ")


def test_gpu_defaults_are_bf16_and_channels_last_for_convnets(monkeypatch) -> None:
    forbid_timing(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = torch.device("cuda")
    chosen = choose_engine(convnet(), SAMPLE, LABELS, cuda)
    assert (chosen.autocast_dtype, chosen.channels_last) == (torch.bfloat16, True)
    chosen = choose_engine(mlp(), SAMPLE, LABELS, cuda, "fp32")
    assert (chosen.autocast_dtype, chosen.channels_last) == (None, False)


def test_describe_names_device_precision_and_layout() -> None:
    text = Engine(CPU, torch.bfloat16, True, "because").describe()
    assert text == "cpu · bf16 autocast · channels_last (because)"


def test_time_step_leaves_the_model_untouched() -> None:
    model = convnet()
    before = [p.detach().clone() for p in model.parameters()]
    seconds = time_step(model, SAMPLE, LABELS, None, channels_last=True, repeats=1)
    assert seconds > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert next(model.parameters()).is_contiguous()  # layout change was on the copy only


def test_choose_threads_keeps_the_faster_pool(monkeypatch) -> None:
    original = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        stalled = {2: 1.0, 1: 0.04}  # a busy neighbour stalls the full pool
        monkeypatch.setattr(engine, "time_step", lambda *args: stalled[torch.get_num_threads()])
        threads, note = engine.choose_threads(mlp(), SAMPLE, LABELS, Engine(CPU, None, False, ""))
        assert threads == 1 and torch.get_num_threads() == 1
        assert "1 threads" in note
        torch.set_num_threads(2)
        stalled.update({2: 0.02, 1: 0.04})  # idle machine: every core helps
        threads, _ = engine.choose_threads(mlp(), SAMPLE, LABELS, Engine(CPU, None, False, ""))
        assert threads == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(original)

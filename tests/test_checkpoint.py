"""Checkpoint tests: exact round trips of weights, meta and resume state; refusal of pickles;
clear errors for incomplete folders; atomic replacement; no wrapper prefixes."""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from neuralab.checkpoint import format as checkpoint
from neuralab.checkpoint.format import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    unwrap,
)
from neuralab.inference.predict import Predictor

META = {"model": {"name": "mlp", "args": {"width": 4}}, "classes": ["a", "b"], "epoch": 2}


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def gradients(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(6, 3, generator=generator)
    model.zero_grad()
    nn.functional.cross_entropy(model(inputs), torch.tensor([0, 1] * 3)).backward()


def trained(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, object]:
    """A model, Adam (int-keyed state, tensor steps, tuple betas) and a scheduler after 3 steps."""
    model = small_net(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9**step)
    for step in range(3):
        gradients(model, step)
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def assert_same(actual, expected, where: str = "state") -> None:
    """Equal values and equal container types all the way down (tuple stays tuple, int keys)."""
    assert type(actual) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for index, (a, b) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, b, f"{where}.{index}")
    else:
        assert actual == expected, where


def test_round_trip_restores_weights_meta_and_training_state(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained()
    state = {
        "epoch": 2,
        "step": 30,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "odd": {1: (2, "x", None), "nested": [True, 0.5, torch.arange(3)]},
        "history": [{"epoch": 1, "train_loss": 0.5}],
    }
    save_checkpoint(tmp_path / "ckpt", model, META, state)
    weights, meta = load_checkpoint(tmp_path / "ckpt")
    assert_same(dict(sorted(weights.items())), dict(sorted(model.state_dict().items())))
    assert meta == {"format": checkpoint.FORMAT_VERSION, **META}
    assert_same(load_training_state(tmp_path / "ckpt"), state)
    assert 1 in state["optimizer"]["state"]  # the int keys really were exercised


def test_restored_optimizer_takes_the_same_next_step(tmp_path: Path) -> None:
    model, optimizer, scheduler = trained()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_checkpoint(tmp_path / "ckpt", model, META, state)

    weights, _ = load_checkpoint(tmp_path / "ckpt")
    restored = small_net(seed=1)  # different initial weights, overwritten by the checkpoint
    restored.load_state_dict(weights)
    loaded = load_training_state(tmp_path / "ckpt")
    # PyTorch's resume order: build both, then load the optimizer, then the scheduler (a
    # scheduler built after the optimizer's state is loaded resets its learning rate).
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=0.01)
    restored_scheduler = torch.optim.lr_scheduler.LambdaLR(
        restored_optimizer, lambda step: 0.9**step
    )
    restored_optimizer.load_state_dict(loaded["optimizer"])
    restored_scheduler.load_state_dict(loaded["scheduler"])

    pairs = [(model, optimizer, scheduler), (restored, restored_optimizer, restored_scheduler)]
    for net, opt, sched in pairs:
        gradients(net, seed=99)
        opt.step()
        sched.step()
    for a, b in zip(model.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert restored_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_without_training_state_there_is_none_to_load(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ckpt", small_net(), META)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "manifest.json",
        "meta.json",
        "model.safetensors",
    ]
    assert load_training_state(tmp_path / "ckpt") is None


class Sentinel:
    """Unpickling this creates a file: proof of code execution if it ever happens."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def plant_pickle(folder: Path, sentinel: Path, name: str = "model.safetensors") -> None:
    """A live payload: unpickling it creates `sentinel`."""
    payload = {"weights": small_net().state_dict(), "x": Sentinel(sentinel)}
    torch.save(payload, folder / name)


def reseal(folder: Path) -> None:
    """What an attacker who also edits the manifest would do."""
    (folder / "manifest.json").unlink()
    checkpoint.write_manifest(folder)


@pytest.mark.parametrize("name", ["model.safetensors", "training.safetensors"])
def test_pickle_in_place_of_safetensors_is_refused_and_never_run(
    tmp_path: Path, name: str, fault_table
) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META, {"epoch": 1})
    sentinel = tmp_path / "executed"
    plant_pickle(folder, sentinel, name)
    with pytest.raises(CheckpointError, match=f"{name} does not match .*manifest.json"):
        load_checkpoint(folder) if name.startswith("model") else load_training_state(folder)
    reseal(folder)  # the manifest now vouches for the pickle: refused by its content
    load = load_checkpoint if name.startswith("model") else load_training_state
    with pytest.raises(CheckpointError, match="zip archive .torch.save.*never loads pickles"):
        load(folder)
    with pytest.raises(CheckpointError):
        Predictor.load(folder)
    assert not sentinel.exists()
    # The file really is a live payload: a pickle loader would have run it.
    torch.load(io.BytesIO((folder / name).read_bytes()), weights_only=False)
    assert sentinel.exists()
    fault_table(
        f"checkpoint: code-running pickle as {name} (manifest kept, then re-sealed)",
        2,
        "refused: digest mismatch, then 'is a zip archive (torch.save)'; sentinel file "
        "never created",
    )


def test_raw_pickle_protocol_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    import pickle

    (folder / "model.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    reseal(folder)
    with pytest.raises(CheckpointError, match="is a Python pickle"):
        load_checkpoint(folder)


def flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "meta.json", "training.json"])
def test_tampered_file_is_refused_naming_both_digests(
    tmp_path: Path, name: str, fault_table
) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META, {"epoch": 1})
    expected = checkpoint.file_digest(folder / name)
    flip_one_byte(folder / name, (folder / name).stat().st_size - 3)
    actual = checkpoint.file_digest(folder / name)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(folder)
        load_training_state(folder)
    assert f"expected SHA-256 {expected}, found {actual}" in str(error.value)
    assert str(folder / name) in str(error.value)
    fault_table(
        f"checkpoint: one bit flipped in {name}",
        1,
        "refused before loading, naming the file, expected and actual SHA-256",
    )


@pytest.mark.parametrize(
    "edit",
    [
        {"_target_": "os.system"},
        {"model": {"name": "mlp", "args": {"activation": {"__class__": "subprocess.Popen"}}}},
        {"hooks": [{"py/object": "builtins.eval"}]},
        {"model": {"name": "os.system", "args": {}}},
    ],
)
def test_metadata_naming_code_is_refused(tmp_path: Path, edit: dict, fault_table) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **edit}))
    reseal(folder)
    with pytest.raises(CheckpointError, match="names code to import|not a registered model"):
        load_checkpoint(folder)
    fault_table(
        f"checkpoint: meta.json naming code ({json.dumps(edit)[:40]})",
        1,
        "refused with the field's path; nothing imported",
    )


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json is missing"):
        load_checkpoint(folder)


def test_missing_meta_json_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    (folder / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta.json is missing.*not a complete"):
        load_checkpoint(folder)


def test_missing_files_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META, {"epoch": 1})
    (folder / "training.safetensors").unlink()
    with pytest.raises(CheckpointError, match="training.safetensors is missing, but manifest"):
        load_training_state(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing, but manifest"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "text, message",
    [('{"format": 99}', "format 99"), ("{not json", "not valid JSON"), ("[1, 2]", "JSON object")],
)
def test_bad_meta_json_is_named(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    (folder / "meta.json").write_text(text, encoding="utf-8")
    reseal(folder)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("failing", ["model.safetensors", "training.safetensors"])
def test_disk_full_during_save_keeps_the_previous_checkpoint_and_says_so(
    tmp_path: Path, monkeypatch, failing: str, fault_table
) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(0), META, {"epoch": 1})
    before = snapshot(folder)
    real_save_file = checkpoint.save_file

    def failing_save_file(tensors, filename, *args, **kwargs):
        if filename.endswith(failing):
            real_save_file(tensors, filename, *args, **kwargs)  # part written, then:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", failing_save_file)
    with pytest.raises(OSError, match="the disk is full.*previous checkpoint .* is intact") as e:
        save_checkpoint(folder, small_net(1), {**META, "epoch": 2}, {"epoch": 2})
    assert e.value.errno == errno.ENOSPC
    assert snapshot(folder) == before
    assert [path.name for path in tmp_path.iterdir()] == ["ckpt"]
    assert torch.equal(load_checkpoint(folder)[0]["0.weight"], small_net(0)[0].weight.detach())
    fault_table(
        f"disk full (ENOSPC) while writing {failing}",
        1,
        "OSError says the disk is full and the previous checkpoint is intact; no temp folder",
    )


def test_successful_save_replaces_the_old_one_completely(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(0), META, {"epoch": 1})
    save_checkpoint(folder, small_net(1), {**META, "epoch": 2})
    weights, meta = load_checkpoint(folder)
    assert meta["epoch"] == 2
    assert torch.equal(weights["0.weight"], small_net(1)[0].weight.detach())
    assert load_training_state(folder) is None  # nothing left over from the old folder
    assert [path.name for path in tmp_path.iterdir()] == ["ckpt"]


class Compiled(nn.Module):
    """Stands in for torch.compile's wrapper: the real model under `_orig_mod`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._orig_mod(inputs)


def test_wrapper_prefixes_are_stripped(tmp_path: Path) -> None:
    model = small_net()
    wrapped = Compiled(Compiled(model))
    assert next(iter(wrapped.state_dict())).startswith("_orig_mod._orig_mod.")
    assert unwrap(wrapped) is model
    save_checkpoint(tmp_path / "ckpt", wrapped, META)
    weights, _ = load_checkpoint(tmp_path / "ckpt")
    assert sorted(weights) == sorted(model.state_dict())


def test_unsupported_state_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"training\.callbacks\.0"):
        save_checkpoint(tmp_path / "ckpt", small_net(), META, {"callbacks": [object()]})
    assert list(tmp_path.iterdir()) == []


def test_safetensors_whose_length_starts_like_a_pickle_loads(tmp_path: Path) -> None:
    """A header length whose first byte is 0x80 (pickle's opcode) is still safetensors: the
    JSON header is padded with spaces (allowed by the format) to such a length."""
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, small_net(), META)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length].rstrip(b" ")
    target = len(header) + (0x80 - len(header)) % 256  # the next length ending in byte 0x80
    padded = header + b" " * (target - len(header))
    path.write_bytes(target.to_bytes(8, "little") + padded + data[8 + length :])
    reseal(folder)
    assert path.read_bytes()[:2] == bytes([0x80, target >> 8])
    weights, _ = load_checkpoint(folder)
    assert torch.equal(weights["0.weight"], small_net()[0].weight.detach())

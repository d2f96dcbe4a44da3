"""Tests for `folder:<path>` datasets: layouts, decoding, bad files and the decoded-image cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neuralab
from neuralab.data import folder as folder_module
from neuralab.data import foldercache
from neuralab.data.dataset import DataError, load_dataset
from neuralab.data.folder import BadImageFile, folder, load_image_file


def write_image(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    """A noisy image of Pillow size (width, height), saved in the format its suffix names."""
    bands = len(Image.new(mode, (1, 1)).getbands())
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], bands), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if bands == 1 else pixels, mode).save(path)
    return path


def make_classes(tree: Path, classes: dict[str, int], mode: str = "RGB") -> None:
    """`count` images per class, alternating .jpg and .PNG (upper case) of different sizes."""
    for class_index, (name, count) in enumerate(classes.items()):
        for i in range(count):
            suffix = ".jpg" if i % 2 == 0 else ".PNG"
            write_image(
                tree / name / f"{i}{suffix}", (10 + 3 * i, 8 + i), mode, seed=10 * class_index + i
            )


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """photos/cat (5 images), photos/dog (5, one RGBA), plus files that are not images."""
    source = tmp_path / "photos"
    make_classes(source, {"cat": 5, "dog": 4})
    write_image(source / "dog" / "alpha.png", (12, 12), "RGBA")
    (source / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (source / "dog" / "README.txt").write_text("not an image")
    return source


def load(source: Path, tmp_path: Path, **options) -> folder_module.ImageDataset:
    return folder(
        tmp_path / "data", path=str(source), image_size=options.pop("image_size", 8), **options
    )


def cache_files(tmp_path: Path) -> list[Path]:
    cache = tmp_path / "data" / "folder-cache"
    return sorted(cache.iterdir()) if cache.exists() else []


def test_class_folders_give_shapes_labels_and_seeded_split(photos: Path, tmp_path: Path) -> None:
    data = load(photos, tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.train.images.dtype == torch.uint8
    assert data.train.images.shape[1:] == (3, 8, 8) and data.channels == 3
    assert (len(data.train), len(data.test)) == (8, 2)  # round(0.2 * 5) = 1 per class
    assert data.test.labels.tolist() == [0, 1]
    assert data.name == f"folder:{photos}" and data.info["files"] == 10
    assert len(data.mean) == len(data.std) == 3 and data.val is None
    again = load(photos, tmp_path, cache=False)
    assert torch.equal(again.test.images, data.test.images)  # same seed, same split


def test_image_size_is_height_width_and_rgba_goes_onto_white(tmp_path: Path) -> None:
    source = tmp_path / "icons"
    make_classes(source, {"a": 2})
    clear = Image.new("RGBA", (20, 10), (0, 0, 0, 0))  # fully transparent black
    (source / "b").mkdir()
    clear.save(source / "b" / "clear.png")
    clear.save(source / "b" / "clear2.png")
    data = load(source, tmp_path, image_size=(6, 12), test_split=0.0)
    assert data.train.images.shape[1:] == (3, 6, 12) and len(data.test) == 0
    assert (data.train.images[data.train.labels == 1] == 255).all()


def test_grayscale_folder_loads_one_channel_unless_asked(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    make_classes(source, {"0": 2, "1": 2}, mode="L")
    assert load(source, tmp_path).channels == 1
    assert load(source, tmp_path, channels=3).channels == 3
    write_image(source / "1" / "colour.png", (9, 9), "RGB")
    assert load(source, tmp_path).channels == 3
    assert load(source, tmp_path, channels=1).channels == 1


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_train_and_held_out_folders(tmp_path: Path, held_out: str) -> None:
    make_classes(tmp_path / "set" / "train", {"a": 3, "b": 2})
    make_classes(tmp_path / "set" / held_out, {"b": 2})
    data = load(tmp_path / "set", tmp_path)
    assert data.classes == ["a", "b"]
    assert (len(data.train), len(data.test)) == (5, 2) and data.test.labels.tolist() == [1, 1]


def test_val_and_test_folders_both_kept(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        make_classes(tmp_path / "set" / split, {"a": count, "b": count})
    data = load(tmp_path / "set", tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 4, 2)


def test_class_only_in_held_out_folder_is_an_error(tmp_path: Path) -> None:
    make_classes(tmp_path / "set" / "train", {"a": 2})
    make_classes(tmp_path / "set" / "val", {"a": 1, "zebra": 1})
    with pytest.raises(DataError, match="zebra"):
        load(tmp_path / "set", tmp_path)


def test_empty_or_missing_folders_are_errors(photos: Path, tmp_path: Path) -> None:
    (photos / "empty").mkdir()
    (photos / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty.*no images.*one sub-folder"):
        load(photos, tmp_path)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="expected one sub-folder"):
        load(tmp_path / "bare", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load(tmp_path / "missing", tmp_path)
    with pytest.raises(DataError, match="channels"):
        load(tmp_path / "bare", tmp_path, channels=2)
    with pytest.raises(DataError, match="image_size"):
        load(tmp_path / "bare", tmp_path, image_size=0)


def test_cache_is_reused_without_opening_images(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load(photos, tmp_path)
    assert [f.suffix for f in cache_files(tmp_path)] == [".safetensors"]

    def refuse(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(Image, "open", refuse)
    second = load(photos, tmp_path)
    assert torch.equal(second.train.images, first.train.images)
    assert torch.equal(second.test.labels, first.test.labels)
    assert second.classes == first.classes and second.mean == first.mean


def test_changed_file_invalidates_the_cache(photos: Path, tmp_path: Path) -> None:
    first = load(photos, tmp_path, test_split=0.0)
    old_cache = cache_files(tmp_path)
    write_image(photos / "cat" / "0.jpg", (30, 30), seed=99)  # same name, new pixels
    second = load(photos, tmp_path, test_split=0.0)
    assert not torch.equal(second.train.images[0], first.train.images[0])
    assert cache_files(tmp_path) != old_cache and len(cache_files(tmp_path)) == 1  # stale removed
    (photos / "cat" / "0.jpg").unlink()
    assert len(load(photos, tmp_path, test_split=0.0).train) == 9


def test_corrupt_cache_is_ignored_and_rewritten(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = load(photos, tmp_path)
    [cache] = cache_files(tmp_path)
    cache.write_bytes(b"not a safetensors file")
    again = load(photos, tmp_path)
    assert "ignoring unreadable cache file" in capsys.readouterr().err
    assert torch.equal(again.train.images, first.train.images)
    assert cache.stat().st_size > 100  # rewritten


def test_unwritable_cache_folder_only_warns(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "data").write_text("a file where the data folder should be")
    data = load(photos, tmp_path)
    assert len(data.train) == 8 and "not caching" in capsys.readouterr().err


def test_failed_cache_write_leaves_no_temp_files(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def half_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(foldercache, "save_file", half_write)
    assert len(load(photos, tmp_path).train) == 8
    assert "No space left" in capsys.readouterr().err
    assert cache_files(tmp_path) == []


def test_non_image_with_image_extension_names_the_file(
    photos: Path, tmp_path: Path, fault_table
) -> None:
    fake = photos / "dog" / "fake.jpg"
    fake.write_text("<html>not really a jpeg</html>")
    with pytest.raises(DataError, match=r"fake\.jpg.*skip_bad_files") as error:
        load(photos, tmp_path)
    assert str(fake) in str(error.value)
    assert cache_files(tmp_path) == []  # nothing half-written after a failed read
    fault_table(
        "image folder: non-image file with an image extension",
        1,
        "DataError naming the file and --skip-bad-files; no cache written",
    )


def test_skip_bad_files_collects_and_warns(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, fault_table
) -> None:
    fake = photos / "dog" / "fake.jpg"
    fake.write_bytes(b"\x00" * 64)
    data = load(photos, tmp_path, skip_bad_files=True, test_split=0.0)
    assert len(data.train) == 10
    [(path, reason)] = data.info["skipped"]
    assert path == str(fake) and "decode" in reason
    assert f"skipped {fake}" in capsys.readouterr().err
    cached = load(photos, tmp_path, skip_bad_files=True, test_split=0.0)  # from the cache
    assert cached.info["skipped"] == data.info["skipped"]
    with pytest.raises(DataError, match="fake.jpg"):  # strict loads still refuse it
        load(photos, tmp_path, test_split=0.0)
    fault_table(
        "image folder: undecodable file with skip_bad_files",
        1,
        "skipped, every file listed with its reason; strict loads still refuse",
    )


def test_empty_image_file_is_an_error(photos: Path, tmp_path: Path, fault_table) -> None:
    (photos / "cat" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png"):
        load(photos, tmp_path)
    assert cache_files(tmp_path) == []
    fault_table("image folder: empty (0-byte) image file", 1, "DataError naming the file")


def test_truncated_png_is_an_error(photos: Path, tmp_path: Path, fault_table) -> None:
    whole = write_image(photos / "cat" / "cut.png", (64, 64), seed=5).read_bytes()
    (photos / "cat" / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        load(photos, tmp_path)
    fault_table("image folder: truncated PNG", 1, "DataError naming the file")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("limit", [1000, 600])  # 1600 pixels: over the warning, over the error
def test_decompression_bomb_is_an_error(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, fault_table
) -> None:
    write_image(photos / "cat" / "huge.png", (40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match=r"huge\.png.*decompression-bomb"):
        load(photos, tmp_path)
    fault_table(
        "image folder: decompression-bomb image (over the warning and the error limit)",
        1,
        "DataError naming the file",
    )


def test_load_image_file_matches_training_pixels(photos: Path, tmp_path: Path) -> None:
    write_image(photos / "cat" / "gray.png", (11, 7), "L")
    data = load(photos, tmp_path, image_size=(6, 5), test_split=0.0)
    files = sorted((photos / "cat").glob("*[gG]")) + sorted((photos / "dog").glob("*[gG]"))
    assert len(files) == len(data.train)
    for row, file in enumerate(files):
        assert torch.equal(load_image_file(file, 3, (6, 5)), data.train.images[row]), file
    assert load_image_file(files[0], 1, 4).shape == (1, 4, 4)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    picture = Image.open(write_image(tmp_path / "plain.png", (20, 10)))
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: display rotated 90 degrees clockwise
    picture.save(tmp_path / "tagged.png", exif=exif)
    picture.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")
    tagged = load_image_file(tmp_path / "tagged.png", 3, (8, 4))
    assert torch.equal(tagged, load_image_file(tmp_path / "upright.png", 3, (8, 4)))


def test_load_image_file_names_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(BadImageFile, match="bad.png"):
        load_image_file(bad, 3, (8, 8))


def test_registered_for_load_dataset(photos: Path, tmp_path: Path) -> None:
    data = load_dataset(
        f"folder:{photos}", data_dir=tmp_path / "data", image_size=4, val_split=0.25
    )
    assert data.image_size == (4, 4) and len(data.val) == 2 and len(data.train) == 6


def write_halves(root: Path, per_class: int, seed: int) -> Path:
    """Two classes of noisy 8x8 RGB images: "left" is brighter on its left half, "right" on
    its right half (+60 over noise of mean 100, sd 30): learnable, not by mean brightness."""
    generator = np.random.default_rng(seed)
    for name, half in (("left", 0), ("right", 1)):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = generator.normal(100, 30, (8, 8, 3))  # (H, W, C)
            pixels[:, half * 4 : (half + 1) * 4] += 60
            image = np.clip(pixels, 0, 255).astype(np.uint8)
            Image.fromarray(image, "RGB").save(root / name / f"{index}.png")
    return root


def test_a_model_learns_from_a_folder(tmp_path: Path) -> None:
    """Training on a folder learns its classes: held-out accuracy over the bar and the loss
    falls. Measured (seeds 0-3): accuracy 1.0 on the 16 held-out images, training loss 0.38-0.45
    → 0.055-0.063 over 4 epochs; an untrained model (lr 1e-9) scores 0.13-0.56."""
    images = write_halves(tmp_path / "halves", per_class=40, seed=0)
    run = neuralab.train(
        data=f"folder:{images}", model="mlp", epochs=4, batch_size=8, data_dir=str(tmp_path),
        out=str(tmp_path / "run"), verbose=False,
        overrides=["data.options.image_size=8", "train.precision=fp32", "train.threads=1",
                   # the settings measured below (before model-family defaults existed)
                   "optim.name=sgd", "schedule.name=constant", "train.label_smoothing=0"],
    )  # fmt: skip
    assert run.metrics["count"] == 16  # 20% of 40 per class held out
    assert run.metrics["accuracy"] >= 0.9  # at most one of 16 wrong
    losses = [
        row["train_loss"] for row in json.loads((tmp_path / "run" / "history.json").read_text())
    ]
    assert losses[-1] < losses[0] / 3

"""Omniglot on the real files (NEURALAB_DATA; skipped without it, a failure under CI): the
dataset's class-disjoint splits, Lake et al.'s runs, a damaged zip, and a short prototypical
network run that must clearly beat chance on alphabets it never saw."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import neuralab
from neuralab.data import DataError, load_dataset
from neuralab.data.episodes import EpisodeLoader
from neuralab.data.omniglot import BACKGROUND, one_shot_runs, read_zip_images

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def root() -> Path:
    """NEURALAB_DATA, or skip when it is unset or lacks omniglot/."""
    found = os.environ.get("NEURALAB_DATA")
    if not found:
        pytest.skip("NEURALAB_DATA is not set")
    if not (Path(found).expanduser() / "omniglot").is_dir():
        pytest.skip(f"omniglot is not under NEURALAB_DATA={found}")
    return Path(found).expanduser()


@pytest.fixture(scope="module")
def omniglot(root: Path):
    return load_dataset("omniglot", root, download=False)


def alphabets(dataset, split: str) -> set[str]:
    labels = getattr(dataset, split).labels.unique().tolist()
    return {dataset.classes[label].split("/")[0] for label in labels}


def test_splits_hold_disjoint_alphabets_of_the_two_background_sets(omniglot) -> None:
    # 242 distinct characters (Greek and Latin are in both zips and read once), 20 drawings
    # each; the 180 training characters also rotated by 90, 180 and 270 degrees.
    assert (len(omniglot.train), len(omniglot.val), len(omniglot.test)) == (14400, 440, 800)
    assert len(omniglot.classes) == 180 * 4 + 22 + 40
    train, val, test = (alphabets(omniglot, s) for s in ("train", "val", "test"))
    assert val == {"Early_Aramaic"} and test == {"Korean"} and len(train) == 6
    assert not train & (val | test)
    counts = torch.bincount(omniglot.train.labels)
    assert counts.min() == counts.max() == 20
    # A rotated class is its character turned: drawing 0 of class 1 is drawing 0 of class 0
    # rotated by 90 degrees (counter-clockwise).
    first, turned = omniglot.train.images[0], omniglot.train.images[20]
    assert torch.equal(torch.rot90(first, 1, dims=(1, 2)), turned)


def test_test_episodes_only_draw_test_classes(omniglot) -> None:
    loader = EpisodeLoader(omniglot.test, 20, 1, 2, 5, omniglot.mean, omniglot.std, seed=1)
    test_images = {bytes(image.numpy()) for image in omniglot.test.images}
    train_images = {bytes(image.numpy()) for image in omniglot.train.images[:4000]}
    assert not test_images & train_images
    index = loader.index
    assert set(index.classes.tolist()) <= set(omniglot.test.labels.tolist())


def test_lake_runs_are_20_way_one_shot_with_one_query_per_character(root: Path) -> None:
    runs = one_shot_runs(root, download=False)
    assert [run.name for run in runs] == [f"run{i:02d}" for i in range(1, 21)]
    for run in runs:
        assert run.support.shape == run.query.shape == (20, 1, 28, 28)
        assert sorted(run.answers.tolist()) == list(range(20))


def test_a_damaged_zip_is_refused_with_its_name(root: Path, tmp_path: Path, fault_table) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    for name in BACKGROUND:
        shutil.copy(root / "omniglot" / name, folder / name)
    damaged = folder / BACKGROUND[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(DataError, match=BACKGROUND[0]):
        load_dataset("omniglot", tmp_path, download=False)
    with pytest.raises(DataError, match="not a readable zip"):
        read_zip_images(damaged, (28, 28), prefix_parts=1)
    fault_table("damaged Omniglot zip", 1, "DataError naming the file; nothing written")


def test_a_short_protonet_run_recognises_unseen_alphabets(root: Path, tmp_path: Path) -> None:
    run = neuralab.train(
        "omniglot-protonet", epochs=1, data_dir=str(root), out=str(tmp_path / "run"),
        verbose=False,
        overrides=["data.download=false", "train.precision=fp32", "task.episodes=120",
                   "task.ways=20", "task.eval_episodes=100"],
    )  # fmt: skip
    # 5-way 1-shot on Korean after 120 training episodes: 89% (seed 0); chance is 20%.
    assert run.metrics["accuracy"] > 0.8
    report = neuralab.evaluate(run.run_dir, ways=20, episodes=50)
    assert report["episodes"]["20-way 1-shot"]["accuracy"] > 0.55  # measured 70%; chance 5%
    assert report["lake_one_shot_runs"]["error"] < 0.5  # measured 37%; chance 95%

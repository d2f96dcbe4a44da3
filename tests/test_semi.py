"""Semi-supervised learning by self-training (train.semi, run/semi.py, data/pseudo.py) and the
unlabelled data it reads (IMDB's unlabelled reviews, data.labelled_per_class's remainder), on
tiny synthetic sets: the stages and their data, what each stage's tokenizer saw (the test
split never; the unlabelled texts only when pseudo-labelled), and the refusals."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

import neuralab
from neuralab.data import DataError, load_dataset
from neuralab.data.pseudo import add_pseudo_labels, write_pseudo_labels
from neuralab.data.text import read_tar_texts
from neuralab.errors import ConfigError

POSITIVE = ["good", "great", "wonderful", "superb", "lovely", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "poor", "dull", "terrible"]
FILLER = ["the", "film", "movie", "plot", "actor", "was", "and", "a", "it", "of"]
FAST = [
    "train.precision=fp32",
    "optim.name=adam",
    "optim.lr=0.05",
    "schedule.name=constant",
    "train.batch_size=8",
    "tokenizer.min_frequency=1",
    "tokenizer.max_length=24",
    "model.args.embed_dim=8",
    "model.args.buckets=256",
]
TEST_ONLY = "zqtestonly"  # a word only test texts hold
UNLABELLED_ONLY = "zqunlabelled"  # a word only unlabelled texts hold


def review(rng: random.Random, positive: bool, extra: str = "") -> str:
    words = rng.choices(FILLER, k=rng.randint(3, 10))
    words += rng.choices(POSITIVE if positive else NEGATIVE, k=2) + ([extra] if extra else [])
    rng.shuffle(words)
    return " ".join(words)


def write_imdb(root: Path, per_class: int = 20, unsup: int = 60, seed: int = 0) -> Path:
    """A small aclImdb tree: train/test pos/neg `<id>_<rating>.txt`, and train/unsup/."""
    rng = random.Random(seed)
    tree = root / "imdb" / "aclImdb"
    for split in ("train", "test"):
        for label, rating in (("pos", 8), ("neg", 2)):
            folder = tree / split / label
            folder.mkdir(parents=True)
            for index in range(per_class):
                extra = TEST_ONLY if split == "test" else ""
                text = review(rng, label == "pos", extra)
                (folder / f"{index}_{rating}.txt").write_text(text, encoding="utf-8")
    folder = tree / "train" / "unsup"
    folder.mkdir()
    for index in range(unsup):
        text = review(rng, index % 2 == 0, UNLABELLED_ONLY)
        (folder / f"{index}_0.txt").write_text(text, encoding="utf-8")
    return root


def vocabulary(run_dir: Path) -> set[str]:
    return set(neuralab.load(run_dir).modality.tokenizer.backend.get_vocab())


@pytest.fixture(scope="module")
def semi_run(tmp_path_factory) -> tuple[neuralab.Run, Path]:
    root = write_imdb(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("semi") / "run"
    run = neuralab.train(
        data="imdb", model="ngram", epochs=4, out=str(out), data_dir=str(root), verbose=False,
        overrides=[*FAST, "data.options.unlabelled=true", "train.semi.method=pseudo-label",
                   "train.semi.threshold=0.6"],
    )  # fmt: skip
    return run, root


def test_the_teacher_labels_the_unlabelled_reviews_and_the_run_learns_from_them(
    semi_run,
) -> None:
    run, root = semi_run
    teacher = run.run_dir / "teacher"
    assert (teacher / "metrics.json").exists() and (teacher / "pseudo-labels.safetensors").exists()
    from safetensors.torch import load_file

    pseudo = load_file(str(teacher / "pseudo-labels.safetensors"))
    kept = len(pseudo["index"])
    assert 0 < kept <= 60 and bool((pseudo["confidence"] >= 0.6).all())
    # the unlabelled reviews alternate positive / negative: the teacher labels most right
    names = sorted(f"{i}_0.txt" for i in range(60))  # the unlabelled set's order: by name
    positive = torch.tensor([int(name.split("_")[0]) % 2 == 0 for name in names]).long()
    truth = positive[pseudo["index"]]  # even ids were written positive
    assert float((pseudo["labels"] == truth).double().mean()) >= 0.8
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["data"]["pseudo_labels"] == str(teacher / "pseudo-labels.safetensors")
    assert config["train"]["semi"]["method"] == "off"  # the stage is an ordinary run
    teacher_count = 40
    dataset = load_dataset("imdb", root, download=False, unlabelled=True)
    learned = add_pseudo_labels(dataset, teacher / "pseudo-labels.safetensors")
    assert len(learned.train) == teacher_count + kept


def test_the_test_split_never_reaches_a_tokenizer_and_unlabelled_texts_only_when_labelled(
    semi_run,
) -> None:
    run, _ = semi_run
    teacher_words, student_words = vocabulary(run.run_dir / "teacher"), vocabulary(run.run_dir)
    assert TEST_ONLY not in teacher_words and TEST_ONLY not in student_words
    assert UNLABELLED_ONLY not in teacher_words  # the teacher saw the labelled reviews alone
    assert UNLABELLED_ONLY in student_words  # the run learned from the pseudo-labelled ones


def test_a_supervised_run_never_reads_the_unlabelled_reviews(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=3, unsup=4)
    (root / "imdb" / "aclImdb" / "train" / "unsup" / "9_0.txt").write_bytes(b"caf\xe9")
    assert load_dataset("imdb", root, download=False).unlabelled is None  # never opened
    with pytest.raises(DataError, match=r"9_0\.txt:1: byte 0xe9"):
        load_dataset("imdb", root, download=False, unlabelled=True)
    with pytest.raises(ConfigError, match="only a semi-supervised run uses them"):
        neuralab.train(
            data="imdb", model="ngram", data_dir=str(root), out=str(tmp_path / "r"),
            verbose=False, overrides=[*FAST, "data.options.unlabelled=true"],
        )  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_unlabelled_reviews_are_read_from_a_tar_in_memory(tmp_path: Path) -> None:
    archive = tmp_path / "unsup.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("aclImdb/train/unsup/2_0.txt", "second"),
                           ("aclImdb/train/unsup/1_0.txt", " first "),
                           ("aclImdb/train/urls_unsup.txt", "http://x")):  # fmt: skip
            data = text.encode("utf-8")
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    assert read_tar_texts(archive, "aclImdb/train/unsup/") == ["first", "second"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unsup.tar.gz"]  # nothing extracted


def test_a_packed_archive_that_fails_its_checksum_is_refused(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=2, unsup=1)
    unsup = root / "imdb" / "aclImdb" / "train" / "unsup"
    for path in unsup.iterdir():
        path.unlink()
    unsup.rmdir()
    (root / "imdb" / "aclImdb_v1-unsup.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="aclImdb_v1-unsup.tar.gz"):
        load_dataset("imdb", root, download=False, unlabelled=True)
    (root / "imdb" / "aclImdb_v1-unsup.tar.gz").unlink()
    with pytest.raises(DataError, match="unlabelled reviews are neither in"):
        load_dataset("imdb", root, download=False, unlabelled=True)


def test_pseudo_labels_made_for_another_unlabelled_set_are_refused(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=4, unsup=6)
    dataset = load_dataset("imdb", root, download=False, unlabelled=True)
    path = write_pseudo_labels(tmp_path / "p.safetensors", dataset.unlabelled,
                               torch.tensor([0, 3]), torch.tensor([1, 0]),
                               torch.tensor([0.95, 0.99]))  # fmt: skip
    joined = add_pseudo_labels(dataset, path)
    assert len(joined.train) == 10 and len(joined.unlabelled) == 4
    assert joined.train.labels[-2:].tolist() == [1, 0]
    other = load_dataset("imdb", root, download=False, unlabelled=True, labelled_per_class=2)
    with pytest.raises(DataError, match="made for another unlabelled set"):
        add_pseudo_labels(other, path)


def test_labelled_per_class_remainder_is_the_unlabelled_set(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=10, unsup=6)
    dataset = load_dataset("imdb", root, download=False, unlabelled=True, labelled_per_class=3)
    assert len(dataset.train) == 6 and len(dataset.unlabelled) == 14 + 6
    # the remainder keeps its true labels (for measuring), the unlabelled reviews have none
    assert (
        dataset.unlabelled.labels[:14].ge(0).all() and dataset.unlabelled.labels[14:].eq(-1).all()
    )


def test_semi_refusals(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=3, unsup=4)
    common = dict(data="imdb", model="ngram", data_dir=str(root), verbose=False)
    with pytest.raises(ConfigError, match="several label fields does not learn that way"):
        neuralab.train(**common, out=str(tmp_path / "a"), overrides=[
            *FAST, "train.semi.method=pseudo-label", "data.options.unlabelled=true",
            "data.options.label_field=[sentiment, stars]"])  # fmt: skip
    with pytest.raises(DataError, match="no unlabelled example reached"):
        neuralab.train(**common, out=str(tmp_path / "b"), epochs=1, overrides=[
            *FAST, "train.semi.method=pseudo-label", "data.options.unlabelled=true",
            "train.semi.threshold=0.9999999"])  # fmt: skip
    with pytest.raises(DataError, match="train.semi needs unlabelled examples"):
        neuralab.train(**common, out=str(tmp_path / "c"), epochs=1,
                       overrides=[*FAST, "train.semi.method=pseudo-label"])  # fmt: skip
    assert not (tmp_path / "a").exists()


def test_unlabelled_copies_of_test_texts_are_left_out(tmp_path: Path) -> None:
    root = write_imdb(tmp_path, per_class=3, unsup=4)
    test_text = (root / "imdb" / "aclImdb" / "test" / "pos" / "0_8.txt").read_text()
    (root / "imdb" / "aclImdb" / "train" / "unsup" / "7_0.txt").write_text(test_text)
    dataset = load_dataset("imdb", root, download=False, unlabelled=True)
    assert len(dataset.unlabelled) == 4 and dataset.info["unlabelled_dropped"] == 1
    assert test_text.strip() not in dataset.unlabelled.texts


def test_keep_takes_the_most_confident_per_class_against_brute_force() -> None:
    from neuralab.run.semi import chosen

    generator = torch.Generator().manual_seed(0)
    confidence = torch.rand(200, generator=generator)
    labels = torch.randint(0, 4, (200,), generator=generator)
    picked = chosen(confidence, labels, 0.3, 0.2, 4)  # at most 10 per class, each ≥ 0.3
    expected = []
    for label in range(4):
        members = [i for i in range(200) if labels[i] == label and confidence[i] >= 0.3]
        members.sort(key=lambda i: -float(confidence[i]))
        expected += members[:10]
    assert picked.tolist() == sorted(expected)
    assert chosen(confidence, labels, 0.9, None, 4).tolist() == [
        i for i in range(200) if confidence[i] >= 0.9
    ]

"""Word vectors learned from unlabelled texts (train.semi.vectors, data/vectors.py) and the
ngram model that starts from them (embed_words_only, load_word_vectors): which texts the
vectors saw (the training and unlabelled ones, never test: checked from the file), the
model's arithmetic against a hand computation, and the refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

import neuralab
from neuralab.data import DataError, load_dataset
from neuralab.data.vectors import WordVectors, read_word_vectors, texts_digest, write_word_vectors
from neuralab.errors import ConfigError
from neuralab.models import build_model
from neuralab.models.registry import TextSpec
from neuralab.registry import InvalidArgumentError
from test_semi import FAST, TEST_ONLY, UNLABELLED_ONLY, vocabulary, write_imdb

VECTORS = [*FAST, "data.options.unlabelled=true", "train.semi.vectors=cbow",
           "train.semi.vector_epochs=2", "model.args.nb=true", "model.args.ngrams=2",
           "model.args.embed_words_only=true"]  # fmt: skip


@pytest.fixture(scope="module")
def vectors_run(tmp_path_factory) -> tuple[neuralab.Run, Path]:
    root = write_imdb(tmp_path_factory.mktemp("data"), per_class=20, unsup=40)
    out = tmp_path_factory.mktemp("vectors") / "run"
    run = neuralab.train(
        data="imdb",
        model="ngram",
        epochs=3,
        out=str(out),
        data_dir=str(root),
        verbose=False,
        overrides=VECTORS,
    )
    return run, root


def test_the_vectors_saw_the_training_and_unlabelled_texts_and_never_a_test_text(
    vectors_run,
) -> None:
    run, root = vectors_run
    path = run.run_dir / "vectors" / "word-vectors.safetensors"
    words = read_word_vectors(path)
    dataset = load_dataset("imdb", root, download=False, unlabelled=True)
    seen = [*dataset.train.texts, *dataset.unlabelled.texts]
    assert words.info["texts"] == str(len(seen)) == "80"
    assert words.info["texts_sha256"] == texts_digest(seen)  # exactly those texts, in order
    assert UNLABELLED_ONLY in words.tokens and TEST_ONLY not in words.tokens
    assert words.vectors.shape == (len(words.tokens), 8)
    # the run: one classifier stage, its tokenizer knowing the unlabelled words, never test's
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert config["data"]["word_vectors"] == str(path)
    assert config["train"]["semi"]["vectors"] == "off"  # the stage is an ordinary run
    assert not (run.run_dir / "teacher").exists()
    words_known = vocabulary(run.run_dir)
    assert UNLABELLED_ONLY in words_known and TEST_ONLY not in words_known
    assert 0.0 <= run.metrics["accuracy"] <= 1.0
    # and it predicts and reloads like any run (the vectors file is not needed any more)
    assert neuralab.load(run.run_dir).predict(["a wonderful superb film"])[0][0][0] == "pos"


def test_the_word_embeddings_start_from_the_vectors(vectors_run, tmp_path: Path) -> None:
    run, root = vectors_run
    path = run.run_dir / "vectors" / "word-vectors.safetensors"
    stage = neuralab.train(
        data="imdb", model="ngram", epochs=0.01, out=str(tmp_path / "r"), data_dir=str(root),
        verbose=False, overrides=[*FAST, "data.options.unlabelled=true",
        f"data.word_vectors={path}", "model.args.nb=true", "model.args.embed_words_only=true",
        "model.args.compact=false", "optim.lr=1e-12"],
    )  # fmt: skip
    words = read_word_vectors(path)
    tokenizer = neuralab.load(stage.run_dir).modality.tokenizer
    bag = neuralab.load(stage.run_dir).model.bag.weight.detach()
    for word in ("superb", UNLABELLED_ONLY):
        row = tokenizer.backend.token_to_id(word)
        expected = words.vectors[words.tokens.index(word)]
        torch.testing.assert_close(bag[row], expected, atol=1e-6, rtol=0)


def test_stage_configs_with_vectors() -> None:
    from neuralab.config import RunConfig
    from neuralab.run.semi import stage_config, stage_folders

    config = RunConfig.model_validate({
        "data": {"name": "imdb", "options": {"unlabelled": True}}, "out": "/tmp/x",
        "model": {"name": "ngram", "args": {"embed_dim": 8}},
        "train": {"epochs": 9, "semi": {"method": "pseudo-label", "vectors": "cbow",
                                        "student_epochs": 2}},
    })  # fmt: skip
    vectors, pseudo = Path("/tmp/x/vectors/v"), Path("/tmp/x/teacher/p")
    teacher = stage_config(config, Path("/tmp/x/teacher"), None, vectors)
    student = stage_config(config, Path("/tmp/x"), pseudo, vectors)
    assert teacher.train.epochs == 9 and student.train.epochs == 2
    assert teacher.data.options == {"unlabelled": True}  # its tokenizer learns their words
    assert teacher.data.word_vectors == student.data.word_vectors == str(vectors)
    assert (teacher.train.semi.method, teacher.train.semi.vectors) == ("off", "off")
    assert "unlabelled" not in stage_config(config, Path("/tmp/t"), None).data.options
    config.train.semi.method = "off"  # vectors alone: one classifier stage, the run itself
    assert stage_folders(config) == [Path("/tmp/x")]


def spec(vocab: int = 10) -> TextSpec:
    return TextSpec(vocab_size=vocab, num_classes=2, max_length=16)


def test_words_only_bag_beside_nb_against_a_hand_computation() -> None:
    torch.manual_seed(0)
    model = build_model(
        "ngram", spec(), embed_dim=3, ngrams=2, buckets=50, nb=True, embed_words_only=True,
        binary=True, compact=False,
    )  # fmt: skip
    assert model.bag.num_embeddings == 10  # a row per word, none per bigram
    with torch.no_grad():
        model.nb_weight.weight.normal_()
        model.nb_ratio.normal_()
        model.nb_ratio[0] = 0
    ids = torch.tensor([[4, 5, 4, 0], [7, 0, 0, 0]])
    logits = model.eval()(ids)
    for row, words in enumerate(([4, 5], [7])):
        mean = model.bag.weight[words].mean(0)
        expected = model.classifier(mean)
        features = model.features(ids[row : row + 1])[0]
        for f in features[features != 0].tolist():  # every distinct word and bigram
            expected = expected + model.nb_scale * model.nb_weight.weight[f] * model.nb_ratio[f]
        torch.testing.assert_close(logits[row], expected, atol=1e-5, rtol=1e-5)
    traced = torch.jit.trace(model.for_export(), ids)  # the export path's mean agrees
    torch.testing.assert_close(traced(ids), logits, atol=1e-5, rtol=1e-5)


def test_compaction_keeps_the_pretrained_words_no_training_text_holds() -> None:
    model = build_model(
        "ngram", spec(), embed_dim=2, ngrams=2, buckets=50, nb=True, embed_words_only=True,
        nb_min_count=1, binary=True,
    )  # fmt: skip
    vectors = torch.arange(20, dtype=torch.float32).view(10, 2)
    known = torch.zeros(10, dtype=torch.bool)
    known[[3, 9]] = True  # 9: in no training text
    model.load_word_vectors(vectors, known)
    model.bag.weight.requires_grad_(False)  # train.freeze=[bag], set before compaction
    batches = [(torch.tensor([[3, 4, 0], [5, 3, 0]]), torch.tensor([0, 1]))]
    model.initialize_from_texts(batches)
    kept = model.kept_rows.tolist()
    assert {3, 4, 5, 9} <= set(kept) and all(k < 10 or k >= 10 for k in kept)
    assert model.bag.num_embeddings == 1 + 4  # padding + words 3, 4, 5, 9
    assert not model.bag.weight.requires_grad and model.nb_weight.weight.requires_grad
    row_of_9 = 1 + kept.index(9)
    torch.testing.assert_close(model.bag.weight[row_of_9].detach(), vectors[9])
    ids = torch.tensor([[9, 0, 0]])
    assert row_of_9 in model.table_rows(ids)[0].tolist()


def test_vectors_map_to_any_tokenizer_by_token_and_files_are_checked(tmp_path: Path) -> None:
    from neuralab.data.tokenizer import TextTokenizer, TokenizerSettings

    tokenizer = TextTokenizer.train(
        ["good film", "bad film"], TokenizerSettings(kind="word", min_frequency=1)
    )
    words = WordVectors(["film", "unknown", "good"], torch.eye(3), {"method": "cbow"})
    table, known = words.rows_for(tokenizer)
    film, good = (tokenizer.backend.token_to_id(w) for w in ("film", "good"))
    assert known.sum() == 2 and known[film] and known[good]
    torch.testing.assert_close(table[film], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(table[good], torch.tensor([0, 0, 1.0]))
    path = write_word_vectors(tmp_path / "v.safetensors", words)
    again = read_word_vectors(path)
    assert again.tokens == words.tokens and torch.equal(again.vectors, words.vectors)
    with pytest.raises(DataError, match="does not exist"):
        read_word_vectors(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match=r"bad\.safetensors: cannot read word vectors"):
        read_word_vectors(tmp_path / "bad.safetensors")


def test_vectors_refusals(tmp_path: Path, monkeypatch) -> None:
    root = write_imdb(tmp_path, per_class=3, unsup=4)
    common = dict(data="imdb", data_dir=str(root), verbose=False)
    with pytest.raises(ConfigError, match="set model.args.embed_dim"):
        neuralab.train(**common, model="ngram", out=str(tmp_path / "a"), overrides=[
            *FAST, "train.semi.vectors=cbow", "model.args.embed_dim=0", "model.args.nb=true",
            "data.options.unlabelled=true"])  # fmt: skip
    words = WordVectors(["good"], torch.ones(1, 4), {"method": "cbow", "texts": "1"})
    path = write_word_vectors(tmp_path / "v.safetensors", words)
    with pytest.raises(InvalidArgumentError, match="set model.args.embed_dim=4"):
        neuralab.train(**common, model="ngram", out=str(tmp_path / "b"),
                       overrides=[*FAST, f"data.word_vectors={path}"])  # fmt: skip
    with pytest.raises(DataError, match="model textcnn on text data has none to start"):
        neuralab.train(**common, model="textcnn", out=str(tmp_path / "c"),
                       overrides=[*FAST[:7], f"data.word_vectors={path}"])  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="embed_words_only=true embeds the words"):
        build_model("ngram", spec(), embed_dim=4, ngrams=2, embed_words_only=True)
    monkeypatch.setitem(sys.modules, "gensim.models", None)  # gensim not installed
    with pytest.raises(DataError, match=r"pip install 'neuralab\[vectors\]'"):
        neuralab.train(**common, model="ngram", out=str(tmp_path / "d"), overrides=[
            *FAST, "train.semi.vectors=cbow", "data.options.unlabelled=true"])  # fmt: skip
    assert not any((tmp_path / name).exists() for name in "abcd")

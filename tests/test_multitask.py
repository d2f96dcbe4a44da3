"""Several label fields from one trunk (data/heads.py, data/tables.py, tasks/multitask.py,
inference/multihead.py): reading them, the task's losses and metrics against a reference,
every head learning on a tiny task, and the run's heads in evaluate, predict, export and serve.
Tiny synthetic tables the tests write themselves; a few seconds in all."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

import neuralab
from neuralab.data import DataError, load_dataset
from neuralab.data.heads import (
    Head,
    columns,
    row_predictions,
    slices,
    to_outputs,
    to_probabilities,
)
from neuralab.errors import ConfigError
from neuralab.tasks import TASKS

POSITIVE = ["good", "great", "wonderful", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "boring", "poor", "dull"]
TEAMS = {"billing": ["invoice", "refund"], "network": ["router", "wifi"], "login": ["password"]}
FILLER = ["the", "a", "it", "was", "and", "my", "today", "please"]
FAST = [
    "train.precision=fp32",
    "optim.name=adam",
    "optim.lr=0.05",
    "schedule.name=constant",
    "train.batch_size=16",
    "tokenizer.min_frequency=1",
    "tokenizer.max_length=24",
    "model.args.embed_dim=16",
    "model.args.buckets=512",
]


def ticket_rows(count: int, seed: int = 0) -> list[dict]:
    """Tickets whose words give away the mood, the team and the priority (1-5: one word per
    level, so a bag of words can learn the number)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        mood = "pos" if index % 2 else "neg"
        team = rng.choice(sorted(TEAMS))
        priority = rng.randint(1, 5)
        words = rng.choices(FILLER, k=rng.randint(2, 8)) + [f"level{priority}"]
        words += [rng.choice(POSITIVE if mood == "pos" else NEGATIVE), rng.choice(TEAMS[team])]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "mood": mood, "team": team, "priority": priority})
    return rows


def write_tickets(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "mood", "team", "priority"])
        writer.writeheader()
        writer.writerows(rows)
    return path


HEADS_OPTIONS = ["data.options.label_field=[mood, team, priority]",
                 "data.options.regression=[priority]"]  # fmt: skip


@pytest.fixture(scope="module")
def tickets(tmp_path_factory) -> Path:
    return write_tickets(tmp_path_factory.mktemp("tickets") / "tickets.csv", ticket_rows(400))


@pytest.fixture(scope="module")
def heads_run(tickets: Path, tmp_path_factory) -> neuralab.Run:
    out = tmp_path_factory.mktemp("heads") / "run"
    return neuralab.train(data=f"csv:{tickets}", model="ngram", epochs=8, out=str(out),
                          verbose=False, overrides=[*FAST, *HEADS_OPTIONS])  # fmt: skip


# ------------------------------------------------------------------------------ reading data


def test_several_label_fields_become_heads_with_float_labels(tickets: Path) -> None:
    dataset = load_dataset(f"csv:{tickets}", label_field=["mood", "team", "priority"],
                           regression=["priority"], test_split=0.25)  # fmt: skip
    mood, team, priority = dataset.heads
    assert (mood.classes, team.classes) == (("neg", "pos"), ("billing", "login", "network"))
    assert priority.kind == "regression" and 2.5 < priority.mean < 3.5 and priority.std > 1
    assert dataset.classes == columns(dataset.heads) == [
        "mood=neg", "mood=pos", "team=billing", "team=login", "team=network", "priority",
    ]  # fmt: skip
    labels = dataset.train.labels
    assert labels.dtype == torch.float32 and labels.shape == (300, 3)
    assert set(labels[:, 2].tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # each row's labels are the ones its text gives away
    for text, row in zip(dataset.train.texts[:20], labels[:20].tolist(), strict=True):
        assert f"level{int(row[2])}" in text.split()
        assert any(word in text.split() for word in TEAMS[team.classes[int(row[1])]])


def test_one_classification_field_stays_an_ordinary_label(tickets: Path) -> None:
    dataset = load_dataset(f"csv:{tickets}", label_field="team")
    assert dataset.heads is None and dataset.classes == ["billing", "login", "network"]
    assert dataset.train.labels.dtype == torch.int64 and dataset.train.labels.ndim == 1


def test_a_mistyped_regression_value_names_file_line_and_field(tmp_path: Path) -> None:
    rows = ticket_rows(10)
    rows[6]["priority"] = "high"
    path = write_tickets(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv:8: field 'priority' is a regression.*'high'"):
        load_dataset(f"csv:{path}", label_field=["mood", "priority"], regression=["priority"])


def test_a_missing_label_column_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_tickets(tmp_path / "t.csv", ticket_rows(10))
    with pytest.raises(DataError, match=r"t\.csv:1: no column 'stars' in the header"):
        load_dataset(f"csv:{path}", label_field=["mood", "stars"])
    jsonl = tmp_path / "t.jsonl"
    lines = [json.dumps(row) for row in ticket_rows(5)]
    lines[3] = json.dumps({"text": "no team here", "mood": "pos", "priority": 2})
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.jsonl:4: no field 'team'"):
        load_dataset(f"jsonl:{jsonl}", label_field=["mood", "team"])


def test_regression_must_name_a_label_field(tickets: Path) -> None:
    with pytest.raises(DataError, match=r"regression names \['stars'\].*not label fields"):
        load_dataset(f"csv:{tickets}", label_field=["mood"], regression=["stars"])


def test_labelled_per_class_draws_by_the_first_classification_head(tickets: Path) -> None:
    dataset = load_dataset(f"csv:{tickets}", label_field=["priority", "mood"],
                           regression=["priority"], labelled_per_class=20)  # fmt: skip
    moods = dataset.train.labels[:, 1].long()
    assert torch.bincount(moods).tolist() == [20, 20]
    assert len(dataset.unlabelled) == 320 - 40


def write_imdb(root: Path, name: str = "{index}_{rating}.txt") -> None:
    for split in ("train", "test"):
        for label, words, ratings in (("pos", POSITIVE, (7, 10)), ("neg", NEGATIVE, (1, 4))):
            folder = root / "imdb" / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for index, word in enumerate(words):
                rating = ratings[index % 2]
                (folder / name.format(index=index, rating=rating)).write_text(
                    f"A {word} film.", encoding="utf-8"
                )


def test_imdb_star_ratings_come_from_the_file_names(tmp_path: Path) -> None:
    write_imdb(tmp_path)
    dataset = load_dataset("imdb", tmp_path, download=False, label_field=["sentiment", "stars"])
    assert [h.name for h in dataset.heads] == ["sentiment", "stars"]
    assert dataset.classes == ["sentiment=neg", "sentiment=pos", "stars"]
    assert dataset.train.labels.tolist() == [[0.0, 1.0], [0.0, 4.0]] * 2 + [[0.0, 1.0]] + [
        [1.0, 7.0], [1.0, 10.0]] * 2 + [[1.0, 7.0]]  # fmt: skip
    stars = load_dataset("imdb", tmp_path, download=False, label_field="stars")
    assert stars.heads[0].kind == "regression" and stars.train.labels.shape == (10, 1)


def test_imdb_refuses_a_file_name_without_a_rating(tmp_path: Path) -> None:
    write_imdb(tmp_path, name="{index}.txt")
    with pytest.raises(DataError, match=r"0\.txt: expected a file name <id>_<rating>\.txt"):
        load_dataset("imdb", tmp_path, download=False, label_field=["sentiment", "stars"])
    with pytest.raises(DataError, match="one or both of"):
        load_dataset("imdb", tmp_path, download=False, label_field=["rating"])


# ------------------------------------------------------------------------------ the task

HEADS = [Head("mood", "classification", ("neg", "pos")),
         Head("priority", "regression", (), 3.0, 2.0),
         Head("team", "classification", ("a", "b", "c"))]  # fmt: skip


def test_losses_and_metrics_match_a_reference_computation() -> None:
    task = TASKS.build("multitask", heads=[h.to_dict() for h in HEADS],
                       weights={"mood": 2.0, "team": 0.5})  # fmt: skip
    torch.manual_seed(0)
    outputs = torch.randn(8, 6)
    labels = torch.stack([torch.randint(0, 2, (8,)).float(), torch.randn(8) * 2 + 3,
                          torch.randint(0, 3, (8,)).float()], 1)  # fmt: skip
    model = nn.Identity()
    step = task.step(model, (outputs, labels))
    mood = nn.functional.cross_entropy(outputs[:, :2], labels[:, 0].long())
    priority = nn.functional.mse_loss(outputs[:, 2], (labels[:, 1] - 3.0) / 2.0)
    team = nn.functional.cross_entropy(outputs[:, 3:], labels[:, 2].long())
    assert step.loss.item() == pytest.approx((2 * mood + priority + 0.5 * team).item(), rel=1e-6)
    metrics = task.summarize({k: float(v) for k, v in task.score(model, (outputs, labels)).items()},
                             8)  # fmt: skip
    correct = (outputs[:, :2].argmax(1) == labels[:, 0]).float().mean().item()
    assert metrics["accuracy"] == metrics["mood_accuracy"] == pytest.approx(correct)
    value = outputs[:, 2] * 2.0 + 3.0
    assert metrics["priority_mae"] == pytest.approx((value - labels[:, 1]).abs().mean().item())
    assert metrics["team_loss"] == pytest.approx(team.item(), rel=1e-6)
    assert list(metrics) == list(task.metric_names)
    predicted = task.predict(model, outputs)
    assert torch.allclose(predicted[:, 2], value) and torch.equal(predicted[:, :2], outputs[:, :2])


def test_heads_slice_the_columns_and_predictions_read_per_head() -> None:
    assert slices(HEADS) == [slice(0, 2), slice(2, 3), slice(3, 6)]
    outputs = torch.tensor([[0.0, 2.0, 0.5, 1.0, 3.0, 0.0]])
    values = to_outputs(HEADS, outputs)
    assert values[0, 2].item() == pytest.approx(4.0)  # 0.5 * std 2 + mean 3
    probabilities = to_probabilities(HEADS, values)
    found = row_predictions(HEADS, probabilities[0], top_k=2)
    assert found["mood"]["class"] == "pos" and found["team"]["class"] == "b"
    assert found["priority"] == {"value": pytest.approx(4.0)}
    assert sum(t["probability"] for t in found["mood"]["top"]) == pytest.approx(1.0, abs=1e-5)


def test_bad_head_weights_are_refused() -> None:
    heads = [h.to_dict() for h in HEADS]
    with pytest.raises(ConfigError, match=r"head_weights names \['stars'\]"):
        TASKS.build("multitask", heads=heads, weights={"stars": 1.0})
    with pytest.raises(ConfigError, match="not all 0"):
        TASKS.build("multitask", heads=heads, weights={"mood": 0, "priority": 0, "team": 0})


# ------------------------------------------------------------------------------ a whole run


def test_every_head_learns_on_a_tiny_task(heads_run: neuralab.Run) -> None:
    metrics = heads_run.metrics
    assert metrics["mood_accuracy"] >= 0.95 and metrics["team_accuracy"] >= 0.95
    assert metrics["accuracy"] == metrics["mood_accuracy"]
    # predicting the mean of 1..5 is off by 1.2 on average; the level words give it away
    assert metrics["priority_mae"] < 0.5
    history = json.loads((heads_run.run_dir / "history.json").read_text())
    assert history[-1]["train_priority_mae"] < history[0]["train_priority_mae"]
    header = (heads_run.run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert {"train_team_accuracy", "train_priority_mae", "train_mood_loss"} <= set(header)


def test_evaluate_and_predict_report_each_head(heads_run: neuralab.Run) -> None:
    report = neuralab.evaluate(heads_run.run_dir)
    assert report["heads"]["team"]["accuracy"] == pytest.approx(heads_run.metrics["team_accuracy"])
    assert report["heads"]["priority"]["mae"] == pytest.approx(heads_run.metrics["priority_mae"])
    assert report["heads"]["priority"]["r2"] > 0.8
    assert report["accuracy"] == pytest.approx(heads_run.metrics["accuracy"])
    predictor = neuralab.load(heads_run.run_dir)
    high, low = predictor.predict(["my router was awful level5", "my router was awful level1"])
    assert high["team"]["class"] == "network" and high["mood"]["class"] == "neg"
    assert high["priority"]["value"] - low["priority"]["value"] > 2.0  # in stars, not z-scores


def test_export_carries_the_heads_and_regression_units(heads_run: neuralab.Run) -> None:
    pytest.importorskip("onnxruntime", reason="install the test extra")
    result = neuralab.export(heads_run.run_dir, "onnx", check_data="test")
    sidecar = json.loads(Path(f"{result.path}.json").read_text())
    assert [h["name"] for h in sidecar["heads"]] == ["mood", "team", "priority"]
    import onnxruntime

    predictor = neuralab.load(heads_run.run_dir)
    text = "a refund please level4 great"
    modality = predictor.modality
    _, ids = next(iter(modality.batches(modality.prepare_all([text]))))
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
    expected = predictor.logits([text])
    assert torch.allclose(torch.from_numpy(output), expected, atol=1e-4)
    assert abs(float(output[0, -1]) - 4) < 1.0  # the rating column is in stars, not standardised


def test_serve_answers_per_head_and_refuses_explain(heads_run: neuralab.Run) -> None:
    pytest.importorskip("fastapi", reason="install the test extra")
    from fastapi.testclient import TestClient

    from neuralab.serve.app import ServeSettings, create_app

    predictor = neuralab.load(heads_run.run_dir)
    texts = ["wifi boring level1", "invoice lovely level3"]
    with TestClient(create_app(predictor, ServeSettings())) as client:
        answer = client.post("/predict?top_k=2", json={"texts": texts}).json()
        refused = client.post("/explain", json={"text": texts[0]})
        info = client.get("/info").json()
    expected = predictor.predict(texts, top_k=2)
    assert [p["heads"] for p in answer["predictions"]] == json.loads(json.dumps(expected))
    assert refused.status_code == 422 and "several label fields" in refused.json()["detail"]
    assert [h["name"] for h in info["heads"]] == ["mood", "team", "priority"]


def test_one_label_settings_are_refused_with_several_heads(tickets: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.label_smoothing apply to one label"):
        neuralab.train(data=f"csv:{tickets}", model="ngram", epochs=1, out=str(tmp_path / "r"),
                       verbose=False,
                       overrides=[*FAST, *HEADS_OPTIONS, "train.label_smoothing=0.1"])  # fmt: skip
    with pytest.raises(DataError, match="task.name=multitask learns several label fields"):
        neuralab.train(data=f"csv:{tickets}", model="ngram", epochs=1, out=str(tmp_path / "s"),
                       verbose=False, overrides=[*FAST, "data.options.label_field=team",
                                                 "task.name=multitask"])  # fmt: skip
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()

import pytest
import torch

from neuralab.tasks.metrics import ClassificationCounts, classification_report, format_report

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def random_batches(seed: int, classes: int = 4, batches: int = 3):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        logits = torch.randn(50, classes, generator=generator)
        labels = torch.randint(0, classes, (50,), generator=generator)
        yield logits, labels


def test_report_matches_scikit_learn() -> None:
    counts = ClassificationCounts(4, top_k=(1, 2))
    all_logits, all_labels = [], []
    for logits, labels in random_batches(0):
        counts.update(logits, labels, loss_sum=float(len(labels)))
        all_logits.append(logits)
        all_labels.append(labels)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    predicted = logits.argmax(1)
    report = classification_report(counts, ["a", "b", "c", "d"])
    assert report["count"] == 150
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    assert report["loss"] == pytest.approx(1.0)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        labels, predicted, zero_division=0
    )
    for index, name in enumerate("abcd"):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(precision[index])
        assert row["recall"] == pytest.approx(recall[index])
        assert row["f1"] == pytest.approx(f1[index])
        assert row["support"] == support[index]
    for label in ("macro", "weighted"):
        expected = sklearn_metrics.precision_recall_fscore_support(
            labels, predicted, average=label, zero_division=0
        )
        assert report[label]["f1"] == pytest.approx(expected[2])
    top2 = sklearn_metrics.top_k_accuracy_score(labels, logits, k=2)
    assert report["top_k_accuracy"]["2"] == pytest.approx(top2)
    assert (
        report["confusion_matrix"] == sklearn_metrics.confusion_matrix(labels, predicted).tolist()
    )


def test_never_predicted_class_and_top_k_beyond_classes() -> None:
    counts = ClassificationCounts(3, top_k=(1, 5))
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    counts.update(logits, torch.tensor([0, 2, 1]))
    report = classification_report(counts, ["x", "y", "z"])
    assert report["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert list(report["top_k_accuracy"]) == ["1"]  # top-5 is meaningless with 3 classes
    assert "macro avg" in format_report(report, ["x", "y", "z"])

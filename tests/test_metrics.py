"""runner.cell.metrics.classification_metrics against values worked out by hand (see comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runner.cell.metrics import RUNS_COLUMNS, MetricsError, classification_metrics
from core.results import RUNS_SCHEMA


def _binary_case():
    # y_true 0 0 1 1 1; p(class 1) .2 .6 .7 .4 .9 → y_pred 0 1 1 0 1
    # TN=1 FP=1 FN=1 TP=2
    y = np.array([0, 0, 1, 1, 1])
    p1 = np.array([0.2, 0.6, 0.7, 0.4, 0.9])
    return y, np.stack([1 - p1, p1], axis=1)


def test_binary_metrics_by_hand():
    y, scores = _binary_case()
    m = classification_metrics(y, scores, ["neg", "pos"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # positive class = label 1: precision TP/(TP+FP) = 2/3, recall TP/(TP+FN) = 2/3
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # class 0: precision TN/(TN+FN) = 1/2, recall TN/(TN+FP) = 1/2; macro = mean of the two classes
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["f1_macro"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # positive/negative score pairs ranked correctly: 5 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.7, 0.4, 0.9])))
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["per_class"] == {
        "neg": {"precision": pytest.approx(0.5), "recall": pytest.approx(0.5), "f1": pytest.approx(0.5), "support": 2},
        "pos": {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "support": 3},
    }
    assert m["classes"] == ["neg", "pos"] and m["test_samples"] == 5 and m["notes"] == []


def _three_class_case():
    # y_true 0 0 0 1 1 2 (supports 3, 2, 1), y_pred = argmax = 0 0 1 1 2 2
    y = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([[0.7, 0.2, 0.1],
                       [0.6, 0.3, 0.1],
                       [0.3, 0.5, 0.2],
                       [0.2, 0.7, 0.1],
                       [0.1, 0.4, 0.5],
                       [0.1, 0.1, 0.8]])
    return y, scores


def test_three_class_metrics_by_hand():
    y, scores = _three_class_case()
    m = classification_metrics(y, scores, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=2/2 R=2/3 F1=4/5; b P=1/2 R=1/2 F1=1/2; c P=1/2 R=1/1 F1=2/3
    per = {"a": (1.0, 2 / 3, 4 / 5, 3), "b": (0.5, 0.5, 0.5, 2), "c": (0.5, 1.0, 2 / 3, 1)}
    for name, (p, r, f, s) in per.items():
        got = m["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == (pytest.approx(p), pytest.approx(r), pytest.approx(f))
        assert got["support"] == s
    # weighted by support (3, 2, 1) / 6
    assert m["precision"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(61 / 90)
    # macro: plain mean over classes
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx(13 / 18)
    assert m["f1_macro"] == pytest.approx(59 / 90)
    # one-vs-rest AUCs: a 1, b 7/8 (0.4 < 0.5 of a negative), c 1 → macro 23/24
    assert m["roc_auc"] == pytest.approx(23 / 24)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.6, 0.3, 0.7, 0.4, 0.8])))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_absent_class_gives_nan_auc_with_reason_and_full_size_matrix():
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, scores, ["a", "b", "c"])
    assert math.isnan(m["roc_auc"])
    assert len(m["notes"]) == 1 and "'c'" in m["notes"][0] and "absent" in m["notes"][0]
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # log loss still defined: labels are fixed to all classes
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.3, 0.7, 0.8])))  # p(true class)


def test_unnormalised_rows_are_renormalised():
    y, scores = _three_class_case()
    a = classification_metrics(y, scores, ["a", "b", "c"])
    b = classification_metrics(y, scores.astype(np.float32) * 3, ["a", "b", "c"])
    assert b["log_loss"] == pytest.approx(a["log_loss"], rel=1e-6)
    assert b["roc_auc"] == pytest.approx(a["roc_auc"])


def test_keys_are_runs_columns():
    y, scores = _binary_case()
    m = classification_metrics(y, scores, ["neg", "pos"])
    assert set(RUNS_COLUMNS) <= set(RUNS_SCHEMA.names)
    assert set(m) == set(RUNS_COLUMNS) | {"notes"}


@pytest.mark.parametrize("y, scores, classes, match", [
    ([0, 1, 2], np.full((3, 2), 0.5), ["a", "b"], "labels must lie in"),
    ([0, 1], np.full((3, 2), 0.5), ["a", "b"], "expected shape"),
    ([0, 1], np.full((2, 3), 1 / 3), ["a", "b"], "expected shape"),
    ([0, 1], np.array([[0.5, np.nan], [0.5, 0.5]]), ["a", "b"], "finite"),
    ([0, 1], np.full((2, 2), 0.5), ["a", "a"], "unique"),
    ([0, 1], np.full((2, 1), 1.0), ["a"], "at least 2 classes"),
    ([], np.zeros((0, 2)), ["a", "b"], "non-empty"),
])
def test_bad_input_names_the_culprit(y, scores, classes, match):
    with pytest.raises(MetricsError, match=match):
        classification_metrics(np.asarray(y), scores, classes)

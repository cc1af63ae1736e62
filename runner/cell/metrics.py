"""The ONE quality-metrics function applied to every framework's test predictions (scikit-learn underneath).

Every framework's cell calls ``classification_metrics`` on its own test-set class probabilities, so
a difference in a reported metric can only come from the predictions, never from how it was computed.
The returned keys are the quality columns of the ``runs`` table (``runner/store/fragments.py``); nested
values (confusion matrix, per-class report, classes) are plain Python objects here and JSON strings
in the table.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np


class MetricsError(ValueError):
    """Inputs that cannot be scored (shape mismatch, label out of range, non-finite scores)."""


def load() -> None:
    """Import what ``classification_metrics`` uses (scikit-learn, ~100 MiB resident): the cell does it before
    its memory snapshot, so no cell's memory figure carries a one-time import another cell already paid."""
    import sklearn.metrics  # noqa: F401


def classification_metrics(y_true: Any, scores: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Quality metrics of class probabilities ``scores`` (n, num_classes) against integer labels ``y_true``.

    - ``accuracy``; ``precision``/``recall``/``f1``: binary ⇒ positive class = label 1, multi-class ⇒
      support-weighted average; ``*_macro``: unweighted mean over all classes (binary included).
      Precision of a class that is never predicted is 0 (``zero_division=0``), not an error.
    - ``roc_auc``: binary ⇒ on p(class 1); multi-class ⇒ one-vs-rest, macro. NaN when a class is absent
      from ``y_true`` (AUC is undefined there); the reason is in ``notes``.
    - ``log_loss`` with ``labels`` fixed to all classes (rows renormalised to sum to 1 in float64).
    - ``confusion_matrix``: list of lists, rows = true, columns = predicted, all classes in label order.
    - ``per_class``: ``{class name: {precision, recall, f1, support}}``; ``classes``; ``test_samples``.
    - ``notes``: human-readable reasons for any NaN (not a ``runs`` column; callers log or show it).

    The predicted label is ``argmax`` of ``scores`` (ties → the lowest label, as numpy does).
    """
    # Imported here: sklearn costs seconds to import, and the sweep driver imports this module
    # (through runner.cell) only to compute cell ids.
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    classes = [str(c) for c in classes]
    k = len(classes)
    if k < 2:
        raise MetricsError(f"classes: need at least 2 classes, got {classes!r}")
    if len(set(classes)) != k:
        raise MetricsError(f"classes: names must be unique (per_class is keyed by them), got {classes!r}")
    y = np.asarray(y_true)
    p = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise MetricsError(f"y_true: expected a non-empty 1-D label array, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise MetricsError(f"y_true: labels must be integers, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if p.shape != (y.size, k):
        raise MetricsError(f"scores: expected shape ({y.size}, {k}) (samples × classes), got {p.shape}")
    if y.min() < 0 or y.max() >= k:
        raise MetricsError(f"y_true: labels must lie in [0, {k - 1}] for classes {classes}, got {y.min()}..{y.max()}")
    if not np.all(np.isfinite(p)) or p.min() < 0:
        raise MetricsError("scores: class probabilities must be finite and non-negative")
    row_sums = p.sum(axis=1, keepdims=True)
    if np.any(row_sums <= 0):
        raise MetricsError("scores: a row of class probabilities sums to 0")
    p = p / row_sums  # float32 softmax rows sum to 1 ± 1e-7; sklearn's log_loss warns otherwise
    labels = list(range(k))
    y_pred = p.argmax(axis=1)
    binary = k == 2

    if binary:
        prec, rec, f1, _ = precision_recall_fscore_support(y, y_pred, labels=labels, pos_label=1,
                                                           average="binary", zero_division=0)
    else:
        prec, rec, f1, _ = precision_recall_fscore_support(y, y_pred, labels=labels, average="weighted",
                                                           zero_division=0)
    prec_m, rec_m, f1_m, _ = precision_recall_fscore_support(y, y_pred, labels=labels, average="macro",
                                                             zero_division=0)
    per_p, per_r, per_f, per_s = precision_recall_fscore_support(y, y_pred, labels=labels, average=None,
                                                                 zero_division=0)

    notes: list[str] = []
    absent = [classes[c] for c in labels if not np.any(y == c)]
    if absent:
        roc_auc = math.nan
        notes.append(f"roc_auc is NaN: class(es) {absent} absent from the test labels (AUC undefined)")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any sklearn doubt about the AUC should surface, not pass silently
            if binary:
                roc_auc = float(roc_auc_score(y, p[:, 1]))
            else:
                roc_auc = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels))

    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "precision_macro": float(prec_m),
        "recall_macro": float(rec_m),
        "f1_macro": float(f1_m),
        "roc_auc": roc_auc,
        "log_loss": float(log_loss(y, p, labels=labels)),
        "confusion_matrix": confusion_matrix(y, y_pred, labels=labels).astype(int).tolist(),
        "per_class": {
            name: {"precision": float(per_p[i]), "recall": float(per_r[i]), "f1": float(per_f[i]),
                   "support": int(per_s[i])}
            for i, name in enumerate(classes)
        },
        "classes": classes,
        "test_samples": int(y.size),
        "notes": notes,
    }


#: Keys of ``classification_metrics`` that are ``runs`` columns (``notes`` is not).
RUNS_COLUMNS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro", "f1_macro",
                "roc_auc", "log_loss", "confusion_matrix", "per_class", "classes", "test_samples")

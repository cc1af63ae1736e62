"""Synthetic sweeps for the analysis tests: written with the runner's own contract functions
(``write_fragment`` + ``consolidate``), so the tables have exactly the schema a real sweep has."""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from runner.store import fragments as rr

CLASSES = ("AnnualCrop", "Forest", "River")

BASE_EPOCH_SECONDS = {16: 2.0, 32: 1.2, 64: 0.8, 128: 0.6}


def _rng(*parts: Any) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def _quality(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, Any]:
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class, f1s, precs, recs = {}, [], [], []
    for c in range(k):
        tp = cm[c, c]
        prec = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        rec = tp / cm[c, :].sum() if cm[c, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[CLASSES[c]] = {"precision": prec, "recall": rec, "f1": f1, "support": int(cm[c, :].sum())}
        precs.append(prec), recs.append(rec), f1s.append(f1)
    support = cm.sum(axis=1) / cm.sum()
    return {
        "accuracy": float(np.trace(cm) / cm.sum()),
        "precision": float(np.dot(precs, support)), "recall": float(np.dot(recs, support)),
        "f1": float(np.dot(f1s, support)), "precision_macro": float(np.mean(precs)),
        "recall_macro": float(np.mean(recs)), "f1_macro": float(np.mean(f1s)),
        "confusion_matrix": json.dumps(cm.tolist()), "per_class": json.dumps(per_class),
        "classes": json.dumps(list(CLASSES[:k])), "test_samples": int(cm.sum()),
    }


def make_sweep(root: str | Path, *, frameworks: Iterable[str] = ("keras", "pytorch"), seeds: Iterable[int] = range(5),
               batch_sizes: Iterable[int] = (64,), devices: Iterable[tuple[str, str]] = (("cpu", "Test CPU"),),
               speed: Mapping[str, float] | None = None, skill: Mapping[str, float] | None = None,
               identical: bool = False, noise: float = 0.02, failed: Iterable[tuple[str, int]] = (),
               n_samples: int = 60, epochs: int = 3, config: Mapping[str, Any] | None = None,
               gate: Any = "default", split_hash: Mapping[tuple[str, int], str] | None = None,
               sample_offset: Mapping[str, int] | None = None, predictions: bool = True,
               versions: Mapping[str, Mapping[str, str]] | None = None, git_sha: str = "abc1234",
               start_time: Any = None, noise_key: Any = None, deploy: Mapping[str, float] | None = None) -> Path:
    """Write a consolidated synthetic sweep into ``root`` and return it.

    ``speed``: per-framework multiplier of epoch time (lower = faster). ``skill``: per-framework
    probability that a prediction is right. ``identical``: every framework gets exactly the same
    numbers per seed (the "identical inputs" case). ``failed``: (framework, seed) cells that fail.
    ``versions``: per framework, package versions its cells report (``{"keras": {"keras": "3.14.0"}}``;
    the framework's own package also sets ``framework_version``). ``git_sha``, ``start_time``: every
    cell's. ``noise_key``: another draw of the noise (a later sweep of the same grid); None = the usual.
    ``deploy``: per-framework multiplier of served latency; when given, every ok cell gets deployment rows
    (``deployment_rows``).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)  # as the runner does before any cell writes (write_fragment needs it)
    frameworks = list(frameworks)
    speed = dict(speed or {fw: 1.0 for fw in frameworks})
    skill = dict(skill or {fw: 0.8 for fw in frameworks})
    failed = set(failed)
    k = len(CLASSES)
    for device_kind, device_name in devices:
        for bs in batch_sizes:
            for seed in seeds:
                seed_rng = _rng("seed", seed)
                test_idx = np.sort(seed_rng.choice(500, n_samples, replace=False))
                y_true = seed_rng.integers(0, k, n_samples)
                for fw in frameworks:
                    src = "same" if identical else fw
                    r = _rng(src, seed, bs, device_kind) if noise_key is None else _rng(src, seed, bs, device_kind, noise_key)
                    pinned = dict((versions or {}).get(fw, {}))
                    cell = f"{fw}-{device_kind}-{bs}-{seed}"
                    row: dict[str, Any] = {
                        "sweep_id": "synthetic", "cell_id": cell, "config_hash": cell, "framework": fw,
                        "backend": {"pytorch": "torch"}.get(fw, "tensorflow"),
                        "framework_version": pinned.get({"pytorch": "torch"}.get(fw, "keras"), "9.9"),
                        "versions": json.dumps({"numpy": np.__version__, fw: "9.9", "python": "3.11", **pinned}),
                        "model": "small_cnn", "data": "synthetic", "num_classes": k, "image_size": 16,
                        "seed": seed, "batch_size": bs, "epochs": epochs, "device": device_kind,
                        "device_kind": device_kind, "device_name": device_name, "host": "testhost",
                        "precision_policy": "fp32", "execution_mode": "default", "pipeline": "device",
                        "deterministic": False, "parity_mode": "strict",
                        "cpu_threads": 2, "concurrency": 1, "attempt": 1, "git_sha": git_sha, "start_time": start_time,
                        "split_hash": (split_hash or {}).get((fw, seed), f"split-{seed}"),
                    }
                    if (fw, seed) in failed:
                        row.update(status="failed", error=f"RuntimeError: synthetic failure of {fw} seed {seed}",
                                   traceback="Traceback (most recent call last):\n  ...")
                        rr.write_fragment(root, cell, {"runs": [row]})
                        continue
                    correct = r.random(n_samples) < skill.get(frameworks[0] if identical else fw, 0.8)
                    y_pred = np.where(correct, y_true, (y_true + 1 + r.integers(0, k - 1, n_samples)) % k)
                    logits = r.normal(0, 1, (n_samples, k))
                    logits[np.arange(n_samples), y_pred] += 3.0
                    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                    epoch_s = BASE_EPOCH_SECONDS.get(bs, 1.0) * (1.0 if identical else speed.get(fw, 1.0))
                    epoch_s *= 1 + noise * r.normal()
                    row.update(_quality(y_true, y_pred, k))
                    row.update(
                        status="ok", roc_auc=0.9 + 0.02 * r.random(),
                        log_loss=float(-np.mean(np.log(scores[np.arange(n_samples), y_true]))),
                        train_seconds=epoch_s * epochs, first_epoch_seconds=epoch_s * 3,
                        median_epoch_seconds=epoch_s, images_per_second=200 / epoch_s,
                        latency_p50_ms=2.0 * (1 + noise * r.normal()), latency_p90_ms=2.5, latency_p99_ms=3.0,
                        throughput_images_per_second=1000.0 * (1 + noise * r.normal()), throughput_batch_size=64,
                        import_seconds=1.5 if seed == 0 else None, time_to_first_step_seconds=0.5 + 0.1 * r.random(),
                        peak_host_rss_mib=500.0 * (1 + noise * r.normal()),
                        peak_device_memory_mib=None if device_kind == "cpu" else 300.0,
                        param_count=1234, param_count_total=1250,
                        parity_knobs=json.dumps({"batchnorm_momentum": 0.1, "adam_epsilon": 1e-7,
                                                 "framework_native_name": fw}),
                    )
                    offset = (sample_offset or {}).get(fw, 0)
                    tables = {
                        "runs": [row],
                        "epochs": [{"sweep_id": "synthetic", "cell_id": cell, "framework": fw, "seed": seed,
                                    "epoch": e + 1, "train_loss": 1.0 / (e + 1) + 0.05 * r.random(),
                                    "train_accuracy": 0.5 + 0.1 * e, "val_loss": 1.1 / (e + 1),
                                    "val_accuracy": 0.45 + 0.1 * e + 0.02 * r.random(),
                                    "epoch_seconds": epoch_s, "images_per_second": 200 / epoch_s}
                                   for e in range(epochs)],
                        "predictions": [{"sweep_id": "synthetic", "cell_id": cell, "framework": fw, "seed": seed,
                                         "sample_index": int(i) + offset, "y_true": int(t), "y_pred": int(p),
                                         "scores": s.astype(np.float32).tolist()}
                                        for i, t, p, s in zip(test_idx, y_true, y_pred, scores)] if predictions else [],
                    }
                    if deploy is not None:
                        tables["deployments"] = deployment_rows(cell, fw, seed, deploy.get(fw, 1.0), noise, r)
                    rr.write_fragment(root, cell, tables)
    meta = {"config": config if config is not None else {"report": {"confidence": 0.95}, "grid": {"seed": list(seeds)}},
            "environment": {"python": "3.11", "hosts": ["testhost"]}}
    rr.consolidate(root, metadata=meta)
    if gate == "default":  # the runner's record around frameworks.parity.compare(...) (runner/sweep/gate.py)
        names = sorted(frameworks)
        comparison = {
            "passed": True, "reasons": [], "frameworks": names, "model": "small_cnn", "tolerance": 1e-4,
            "param_counts": {fw: {"trainable": 1234, "total": 1250} for fw in names},
            "spec_param_counts": {"trainable": 1234, "total": 1250},
            "pairs": [{"a": a, "b": b, "max_abs_delta_logits": 3e-7, "max_rel_delta_logits": 2e-6,
                       "logits_passed": True, "passed": True,
                       "step": {"passed": True, "max_abs_delta_update_corrected": 1e-9}}
                      for i, a in enumerate(names) for b in names[i + 1:]],
            "knobs": {fw: {"batchnorm_momentum": 0.1, "adam_epsilon": 1e-7,
                           "adam_epsilon_placement": "before" if fw.startswith("keras") else "after"}
                      for fw in names},
            "knobs_differing": ["adam_epsilon_placement"],
            "cannot_match": ["one optimizer step compared after undoing the Adam epsilon placement"],
        }
        gate = {"schema_version": 1, "created": "2026-01-01T00:00:00Z", "frameworks": names, "status": "passed",
                "summary": "1 check(s) passed",
                "checks": [{"model": "small_cnn", "data": "synthetic", "tolerance": 1e-4, "status": "passed",
                            "comparison": comparison}]}
    if gate is not None:
        (root / "parity_gate.json").write_text(json.dumps(gate))
    return root


#: The native format planted per framework (as the adapters list them first).
NATIVE_FORMAT = {"keras": ("tf_saved_model", "tensorflow"), "pytorch": ("torch_export", "torch")}


def deployment_rows(cell: str, fw: str, seed: int, latency: float, noise: float, r: np.random.Generator) -> list[dict]:
    """One cell's planted deployments: ONNX in ONNX Runtime and the native format, ok; LiteRT skipped for pytorch
    (its reason), and for keras failed on seed 0 (the equality check's numbers kept), ok otherwise."""
    base = {"sweep_id": "synthetic", "cell_id": cell, "framework": fw, "seed": seed,
            "backend": {"pytorch": "torch"}.get(fw, "tensorflow")}

    def ok(fmt: str, runtime: str, role: str, scale: float) -> dict:
        return {**base, "format": fmt, "runtime": runtime, "role": role, "status": "ok", "input_layout": "NHWC",
                "exporter": f"{fw} exporter 9.9", "export_seconds": 0.5, "artifact_mib": 0.4 * scale,
                "serving_device": "cpu", "runtime_version": "1.0", "runtime_threads": 2, "runtime_detail": "{}",
                "serving_imports": json.dumps([runtime] if runtime != "tensorflow" else ["keras", "tensorflow"]),
                "runtime_import_seconds": 0.2 * scale, "load_seconds": 0.01 * scale, "first_call_ms": 1.0,
                "test_samples": 60, "max_abs_prob_diff": 1e-7, "argmax_agreement": 1.0,
                "max_abs_prob_diff_limit": 1e-4, "min_argmax_agreement_limit": 1.0,
                "served_latency_p50_ms": 0.1 * scale * latency * (1 + noise * r.normal()),
                "served_latency_p90_ms": 0.12 * scale * latency, "served_latency_p99_ms": 0.15 * scale * latency,
                "served_latency_calls": 500, "served_throughput_images_per_second": 20000 / (scale * latency),
                "served_throughput_images_per_second_p10": 19000 / (scale * latency),
                "served_throughput_images_per_second_p90": 21000 / (scale * latency), "served_throughput_calls": 40,
                "throughput_batch_size": 64, "serving_peak_rss_mib": 75.0 * scale}

    fmt, runtime = NATIVE_FORMAT.get(fw, ("npz", "numpy"))
    rows = [ok(fmt, runtime, "native", 5.0), ok("onnx", "onnxruntime", "common", 1.0)]
    if fw == "pytorch":
        rows.append({**base, "format": "litert", "runtime": "litert", "role": "mobile", "status": "skipped",
                     "error": "PyTorch → LiteRT needs litert-torch, a separate conversion toolchain"})
    elif seed == 0:
        rows.append({**ok("litert", "litert", "mobile", 0.8), "status": "failed", "max_abs_prob_diff": 0.3,
                     "argmax_agreement": 0.9, "error": "the served artifact does not predict what the trained model "
                                                       "predicted: max |Δ probability| 0.3 > 0.0001"})
    else:
        rows.append(ok("litert", "litert", "mobile", 0.8))
    return rows


def runs_frame(values: dict, metric: str, seeds=None, condition: dict | None = None):
    """A minimal ok-runs frame (condition columns, framework, seed, one metric) for summarize tests:
    ``values`` = {framework: per-seed values}; ``seeds`` = {framework: seed ids} (default 0, 1, …)."""
    import pandas as pd

    from analysis.metrics import CONDITION_COLUMNS

    rows = []
    for fw, vals in values.items():
        for i, v in enumerate(vals):
            seed = seeds[fw][i] if seeds else i
            row = {c: "x" for c in CONDITION_COLUMNS} | {"epochs": 3, "batch_size": 64} | (condition or {})
            rows.append(row | {"cell_id": f"{fw}-{seed}-{i}", "framework": fw, "seed": seed, "status": "ok",
                               metric: float(v)})
    return pd.DataFrame(rows)

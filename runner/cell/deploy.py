"""Deployment of one trained cell: export → reload in a fresh serving process → prove equal → time.

``run_cell`` calls ``deploy`` once, after every in-framework measurement of the cell (so exporting cannot
disturb them), when ``train.deploy.enabled``. For each deployment format the adapter lists
(``Adapter.deploy_formats``, narrowed by ``train.deploy.formats``) it writes one ``deployments`` row:

1. ``skipped`` with the adapter's reason when the framework/backend cannot produce the format
   (``Adapter.export_unsupported``), or for every format when the cell's precision is not fp32 (the
   probability check is an fp32 check);
2. ``Adapter.export`` into a temporary directory, timed (``export_seconds``; the artifact's size on disk);
   an exception is a ``failed`` row with its traceback, and the next format goes on;
3. ``python -m frameworks.serving`` in a new process (the project's own interpreter, no training objects,
   only the runtime imported): cold load, first call, the test split's probabilities, batch-1 latency and
   throughput at the cell's batch size (``train.batch_size``) under the cell's ``train.inference`` repeat rule,
   peak RSS, the modules it loaded;
   a crash, a non-zero exit or ``train.deploy.timeout_s`` is a ``failed`` row with the process's last lines;
4. the check: the served probabilities against the trained model's own (the cell's ``predictions`` rows):
   max |Δ probability| ≤ ``max_abs_prob_diff`` and the same arg-max on ≥ ``min_argmax_agreement`` of the
   samples; otherwise the row is ``failed`` with both numbers kept (not an exception).

The serving runtime gets ``parity.cpu_threads`` threads, the cell's device (CPU cells never see a GPU) and
the same repeat rule as in-framework inference: what one framework's artifact is given, every one is.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.config import DeployConfig, TrainConfig
from core.paths import PROJECT_ROOT
from core.registry import FRAMEWORK_ONLY_MODULES, deploy_format
from core.results import DEPLOYMENTS_SCHEMA
from core.text import one_line
from runner.cell import provenance

log = logging.getLogger("runner.cell")

#: Columns every row of one cell shares (filled by the caller from the ``runs`` row).
IDENTITY_COLUMNS = ("sweep_id", "cell_id", "framework", "backend", "seed")
#: Result keys of the serving process → ``deployments`` columns.
_SERVED = {"latency_p50_ms": "served_latency_p50_ms", "latency_p90_ms": "served_latency_p90_ms",
           "latency_p99_ms": "served_latency_p99_ms", "latency_calls": "served_latency_calls",
           "throughput_images_per_second": "served_throughput_images_per_second",
           "throughput_images_per_second_p10": "served_throughput_images_per_second_p10",
           "throughput_images_per_second_p90": "served_throughput_images_per_second_p90",
           "throughput_calls": "served_throughput_calls", "peak_rss_mib": "serving_peak_rss_mib"}
_COPIED = ("runtime_version", "runtime_threads", "runtime_import_seconds", "load_seconds", "first_call_ms",
           "test_samples", "throughput_batch_size", "serving_device")
#: Lines of the serving process's output kept in a failed row.
_TAIL_LINES = 30


class ServingError(RuntimeError):
    """The serving process failed: crashed, exited non-zero, or ran past ``train.deploy.timeout_s``."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


def formats_to_try(adapter: Any, settings: DeployConfig) -> list[str]:
    """The adapter's deployment formats, narrowed to ``train.deploy.formats`` (order kept)."""
    wanted = settings.formats
    return [f for f in adapter.deploy_formats() if wanted is None or f in wanted]


def deploy(adapter: Any, ds: Any, prediction_rows: list[Mapping[str, Any]], *, train: TrainConfig, precision: str,
           cpu_threads: int | None, device_kind: str, identity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The cell's ``deployments`` rows (see the module doc); never raises for one format's failure.

    ``prediction_rows``: the cell's ``predictions`` rows (test samples in order, with the trained model's
    class probabilities in ``scores``). ``identity``: the ``IDENTITY_COLUMNS`` of the cell's ``runs`` row."""
    settings = train.deploy
    formats = formats_to_try(adapter, settings) if settings.enabled else []
    if not formats:
        return []
    base = {k: identity.get(k) for k in IDENTITY_COLUMNS}
    rows = [_row(base, fmt, settings) for fmt in formats]
    if precision != "fp32":
        for row in rows:
            row.update(status="skipped", error=f"precision {precision}: the deployment check compares fp32 "
                                               "probabilities (max |Δ| ≤ 1e-4); exported only for fp32 cells")
        return [_complete(row) for row in rows]
    index = np.asarray([r["sample_index"] for r in prediction_rows], np.int64)
    trained = np.asarray([r["scores"] for r in prediction_rows], np.float32)
    with tempfile.TemporaryDirectory(prefix="kvp-deploy-") as tmp:
        work = Path(tmp)
        images = work / "test_images.npy"
        np.save(images, np.ascontiguousarray(ds.x[index]))
        for row in rows:
            _one_format(row, adapter, work, images, trained, ds, train, cpu_threads, device_kind)
            log.info("deployment %s → %s: %s%s", row["format"], row["runtime"], row["status"],
                     f" ({row['error']})" if row.get("error") else
                     f", max |Δ prob| {row['max_abs_prob_diff']:.2e}, served p50 {row['served_latency_p50_ms']:.3f} ms")
    return [_complete(row) for row in rows]


def _complete(row: Mapping[str, Any]) -> dict[str, Any]:
    """Every column of the table present (None where not measured), in schema order."""
    return {name: row.get(name) for name in DEPLOYMENTS_SCHEMA.names}


def _row(base: Mapping[str, Any], fmt: str, settings: DeployConfig) -> dict[str, Any]:
    info = deploy_format(fmt)
    return {**base, "format": fmt, "runtime": info.runtime, "role": info.role,
            "max_abs_prob_diff_limit": settings.max_abs_prob_diff,
            "min_argmax_agreement_limit": settings.min_argmax_agreement}


def _one_format(row: dict[str, Any], adapter: Any, work: Path, images: Path, trained: np.ndarray, ds: Any,
                train: TrainConfig, cpu_threads: int | None, device_kind: str) -> None:
    fmt = row["format"]
    reason = adapter.export_unsupported(fmt)
    if reason:
        row.update(status="skipped", error=reason)
        return
    where = work / fmt
    where.mkdir()
    try:
        with provenance.Stopwatch(adapter.sync) as sw:
            artifact = adapter.export(fmt, where)
    except Exception as exc:  # an export failure is data (a failed row); the next format goes on
        row.update(status="failed", error=f"export failed: {one_line(exc)}", traceback=traceback.format_exc())
        return
    row.update(export_seconds=sw.seconds, artifact_mib=_size_bytes(Path(artifact.path)) / 2**20,
               exporter=artifact.exporter, input_layout=artifact.input_layout)
    request = {"artifact": artifact.path, "runtime": row["runtime"], "input_layout": artifact.input_layout,
               "binary": int(ds.num_classes) == 2, "images": str(images),
               "mean": np.asarray(ds.mean, np.float64).tolist(), "std": np.asarray(ds.std, np.float64).tolist(),
               "threads": cpu_threads, "device": device_kind, "inference": _rules(train),
               "throughput_batch_size": train.batch_size, "eval_batch_size": train.eval_batch_size,
               "probs_out": str(where / "served_probs.npy"), "result_out": str(where / "served.json"),
               "watch_modules": sorted(FRAMEWORK_ONLY_MODULES), "parent_pid": os.getpid()}
    try:
        with provenance.Stopwatch() as process_sw:
            result = serve_in_fresh_process(request, work / f"{fmt}.request.json", train.deploy.timeout_s)
        row["serving_process_seconds"] = process_sw.seconds
        served = np.load(request["probs_out"])
    except (ServingError, OSError, ValueError) as exc:
        row.update(status="failed", error=f"serving failed: {one_line(exc)}",
                   traceback=getattr(exc, "output", None) or traceback.format_exc())
        return
    row.update({k: result.get(k) for k in _COPIED})
    row.update({column: result.get(key) for key, column in _SERVED.items()})
    row.update(runtime_detail=json.dumps(result.get("runtime_detail"), sort_keys=True, default=str),
               serving_imports=json.dumps(result.get("serving_imports", [])))
    row.update(compare(served, trained, row["max_abs_prob_diff_limit"], row["min_argmax_agreement_limit"]))


def compare(served: np.ndarray, trained: np.ndarray, max_abs_diff: float, min_agreement: float) -> dict[str, Any]:
    """The equality check's columns: max |Δ probability|, arg-max agreement, and ``ok`` or ``failed`` with why."""
    served, trained = np.asarray(served, np.float64), np.asarray(trained, np.float64)
    if served.shape != trained.shape:
        return {"status": "failed", "error": f"the artifact predicted shape {served.shape}, the trained model "
                                             f"{trained.shape}"}
    if not np.isfinite(served).all():
        return {"status": "failed", "error": "the artifact predicted non-finite probabilities",
                "argmax_agreement": float(np.mean(served.argmax(axis=1) == trained.argmax(axis=1)))}
    diff = float(np.abs(served - trained).max()) if served.size else 0.0
    agreement = float(np.mean(served.argmax(axis=1) == trained.argmax(axis=1))) if len(served) else 1.0
    out: dict[str, Any] = {"max_abs_prob_diff": diff, "argmax_agreement": agreement}
    problems = []
    if diff > max_abs_diff:
        problems.append(f"max |Δ probability| {diff:.3g} > {max_abs_diff:g}")
    if agreement < min_agreement:
        problems.append(f"same arg-max on {100 * agreement:.2f} % of {len(served)} test samples "
                        f"< {100 * min_agreement:g} %")
    if problems:
        out.update(status="failed", error="the served artifact does not predict what the trained model predicted: "
                                          + "; ".join(problems))
    else:
        out["status"] = "ok"
    return out


def serve_in_fresh_process(request: Mapping[str, Any], request_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m frameworks.serving`` on ``request`` in a new process; its JSON result, or ``ServingError``."""
    request_path.write_text(json.dumps(request))
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices are not the serving's output
    try:
        proc = subprocess.run([sys.executable, "-m", "frameworks.serving", str(request_path)], cwd=PROJECT_ROOT,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        raise ServingError(f"the serving process ran past train.deploy.timeout_s={timeout_s:g} s", _tail(output)) from None
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else "(no output)"
        raise ServingError(f"the serving process exited with {_exit_words(proc.returncode)}: {last}", _tail(proc.stdout))
    return json.loads(Path(request["result_out"]).read_text())


def _rules(train: TrainConfig) -> dict[str, Any]:
    rules = train.inference
    return {"warmup_calls": rules.warmup_calls, "min_calls": rules.min_calls, "min_seconds": rules.min_seconds,
            "max_seconds": rules.max_seconds}


def _exit_words(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _tail(output: str | None) -> str:
    return "\n".join((output or "").rstrip().splitlines()[-_TAIL_LINES:])


def _size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

"""Read one or more sweep directories into DataFrames, refusing anything this analysis does not know.

A sweep directory holds ``runs.parquet`` (required), ``epochs.parquet``, ``predictions.parquet`` and
``deployments.parquet`` (optional: their report sections then say "not available"), and ``parity_gate.json``
(optional).
A sweep that crashed before consolidating is read from its per-cell ``fragments/`` instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis import arms, history
from analysis.metrics import CONDITION_COLUMNS
from analysis.options import AnalysisError
from core import results as rr
from core.gate import GateRecord, GateRecordError

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("cell_id", "framework", "seed", "status", "error", *CONDITION_COLUMNS),
    "epochs": ("cell_id", "framework", "seed", "epoch"),
    "predictions": ("cell_id", "sample_index", "y_true", "y_pred"),
    "deployments": ("cell_id", "framework", "seed", "format", "runtime", "status"),
}


@dataclass
class SweepDir:
    path: Path
    metadata: dict[str, Any]  # kvp.* metadata of runs.parquet (config, environment, parity_gate, …)
    parity_gate: GateRecord | None  # parity_gate.json, else metadata["parity_gate"], else None
    parity_gate_source: str  # where it came from ("not run" when None)
    from_fragments: bool = False


@dataclass
class Results:
    dirs: list[SweepDir]
    runs: pd.DataFrame  # every row (ok and failed) + ``results_dir``
    epochs: pd.DataFrame | None
    predictions: pd.DataFrame | None  # without scores
    scores: np.ndarray | None  # (len(predictions), classes) float32, aligned with ``predictions``
    notes: list[str] = field(default_factory=list)
    #: Several directories: every ok cell of each with its headline values, before duplicates across
    #: directories are dropped (``analysis.history`` compares the directories in time order).
    history_cells: pd.DataFrame | None = None
    deployments: pd.DataFrame | None = None  # every row (ok, failed, skipped); None when no sweep deployed

    @property
    def ok_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    @property
    def failed_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] != "ok"]


def _check_table(table: pa.Table, name: str, where: str, metadata: dict[str, Any]) -> None:
    version = metadata.get("schema_version")
    if version is None:
        raise AnalysisError(f"{where}: not a benchmark results table (no kvp.schema_version in its Parquet metadata)")
    if str(version) not in rr.READABLE_VERSIONS:
        raise AnalysisError(f"{where}: results schema version '{version}' is unknown to this analysis "
                            f"(it reads versions {', '.join(rr.READABLE_VERSIONS)})")
    missing = [c for c in REQUIRED_COLUMNS[name] if c not in table.column_names]
    if missing:
        raise AnalysisError(f"{where}: missing required column(s) {missing} for the {name} table")


def _read(path: Path, name: str) -> tuple[pa.Table, dict[str, Any]]:
    try:
        table = pq.read_table(path)
        metadata = rr.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise AnalysisError(f"{path}: not a readable Parquet file ({exc})") from None
    _check_table(table, name, str(path), metadata)
    return rr.upgrade(name, table, str(metadata.get("schema_version"))), metadata


def _read_fragments(root: Path, name: str) -> tuple[pa.Table, dict[str, Any]] | None:
    frags = [d / f"{name}.parquet" for d in rr.fragment_dirs(root) if (d / f"{name}.parquet").is_file()]
    if not frags:
        return None
    tables, metadata = [], {}
    for path in frags:
        table, meta = _read(path, name)
        tables.append(table.replace_schema_metadata(None))
        metadata = metadata or meta
    try:
        return pa.concat_tables(tables, promote_options="default"), metadata
    except pa.ArrowException as exc:
        raise AnalysisError(f"{root / 'fragments'}: fragments of the {name} table do not share a schema ({exc})") from None


def _load_table(root: Path, name: str) -> tuple[pa.Table | None, dict[str, Any], bool]:
    path = root / f"{name}.parquet"
    if path.is_file():
        table, meta = _read(path, name)
        return table, meta, False
    frag = _read_fragments(root, name)
    if frag is not None:
        return frag[0], frag[1], True
    return None, {}, False


def _read_gate(root: Path, metadata: dict[str, Any], notes: list[str]) -> tuple[GateRecord | None, str]:
    """The sweep's equivalence-gate record: ``parity_gate.json``, else the ``runs.parquet`` metadata.

    A record of an unknown version (or shape) is refused: ``AnalysisError`` naming the file."""
    path = root / "parity_gate.json"
    if path.is_file():
        try:
            data, source = json.loads(path.read_text()), str(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            notes.append(f"{path} could not be read ({exc}); equivalence gate shown as not run")
            return None, "not run"
    elif metadata.get("parity_gate") is not None:
        data, source = metadata["parity_gate"], f"{root / 'runs.parquet'} metadata"
    else:
        return None, "not run"
    try:
        return GateRecord.from_dict(data), source
    except GateRecordError as exc:
        raise AnalysisError(f"{source}: {exc}") from None


def _predictions_frame(table: pa.Table, where: str, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray | None]:
    frame = table.drop_columns([c for c in ("scores",) if c in table.column_names]).to_pandas()
    if "scores" not in table.column_names or table.num_rows == 0:
        return frame, None
    scores = table.column("scores").combine_chunks()
    lengths = pc.list_value_length(scores).to_numpy(zero_copy_only=False)
    if scores.null_count or lengths.size == 0 or lengths.min() != lengths.max() or lengths[0] == 0:
        notes.append(f"{where}: scores are missing or of varying length; ROC curves skipped")
        return frame, None
    flat = pc.list_flatten(scores).to_numpy(zero_copy_only=False).astype(np.float32)
    return frame, flat.reshape(-1, int(lengths[0]))


def load_results(dirs: list[str | Path]) -> Results:
    if not dirs:
        raise AnalysisError("no results directory given")
    sweeps: list[SweepDir] = []
    # per directory, aligned (None where a directory has no such table): analysis.arms needs them apart
    runs_frames: list[pd.DataFrame] = []
    epoch_frames: list[pd.DataFrame | None] = []
    pred_frames: list[pd.DataFrame | None] = []
    score_parts: list[np.ndarray | None] = []
    deploy_frames: list[pd.DataFrame | None] = []
    notes: list[str] = []
    for raw in dirs:
        root = Path(raw)
        if not root.exists():
            raise AnalysisError(f"{root}: no such results directory")
        if not root.is_dir():
            raise AnalysisError(f"{root}: not a directory (give the sweep's results directory)")
        runs, meta, from_frags = _load_table(root, "runs")
        if runs is None:
            raise AnalysisError(f"{root}: no runs.parquet (and no fragments/) — not a sweep results directory")
        if runs.num_rows == 0:
            raise AnalysisError(f"{root}: runs table has no rows")
        if from_frags:
            notes.append(f"{root}: read from per-cell fragments (the sweep did not consolidate)")
        gate, gate_source = _read_gate(root, meta, notes)
        sweeps.append(SweepDir(root, meta, gate, gate_source, from_frags))
        frame = runs.to_pandas()
        frame["results_dir"] = str(root)
        runs_frames.append(frame)
        epochs, _, _ = _load_table(root, "epochs")
        epoch_frames.append(epochs.to_pandas() if epochs is not None and epochs.num_rows else None)
        preds, _, _ = _load_table(root, "predictions")
        frame_p = scores = None
        if preds is not None and preds.num_rows:
            frame_p, scores = _predictions_frame(preds, str(root), notes)
        pred_frames.append(frame_p)
        score_parts.append(scores)
        deployments, _, _ = _load_table(root, "deployments")
        deploy_frames.append(deployments.to_pandas() if deployments is not None and deployments.num_rows else None)

    # Different versions of one framework are different arms, never merged (analysis.arms).
    runs_frames, epoch_frames, pred_frames, arm_notes = arms.separate(runs_frames, epoch_frames, pred_frames)
    deploy_frames = arms.relabel_like(deploy_frames, runs_frames)
    notes += arm_notes
    history_cells = history.cell_values(runs_frames, epoch_frames) if len(runs_frames) > 1 else None
    has_preds = [f is not None for f in pred_frames]
    score_parts = [s for s, have in zip(score_parts, has_preds) if have]
    epoch_frames = [f for f in epoch_frames if f is not None]
    pred_frames = [f for f in pred_frames if f is not None]
    deploy_frames = [f for f in deploy_frames if f is not None]

    runs_all = pd.concat(runs_frames, ignore_index=True)
    dup = runs_all.duplicated("cell_id", keep="last")
    if dup.any():
        notes.append(f"{int(dup.sum())} cell(s) appear in more than one results directory; the last one given is used")
        runs_all = runs_all[~dup].reset_index(drop=True)

    predictions = scores = None
    if pred_frames:
        predictions = pd.concat(pred_frames, ignore_index=True)
        if all(s is not None for s in score_parts) and len({s.shape[1] for s in score_parts}) == 1:
            scores = np.concatenate(score_parts)
        # Duplicate cells across dirs: keep each sample row once (the last one), aligned with scores.
        keep = ~predictions.duplicated(["cell_id", "sample_index"], keep="last").to_numpy()
        if not keep.all():
            predictions = predictions[keep].reset_index(drop=True)
            scores = scores[keep] if scores is not None else None
    epochs_all = None
    if epoch_frames:
        epochs_all = pd.concat(epoch_frames, ignore_index=True).drop_duplicates(["cell_id", "epoch"], keep="last")
    deployments_all = None
    if deploy_frames:
        deployments_all = pd.concat(deploy_frames, ignore_index=True).drop_duplicates(
            ["cell_id", "format", "runtime"], keep="last").reset_index(drop=True)
    return Results(sweeps, runs_all, epochs_all, predictions, scores, notes, history_cells, deployments_all)


def require_ok(results: Results) -> None:
    """Refuse a sweep in which no cell succeeded: there is nothing to compare."""
    if len(results.ok_runs):
        return
    failed = results.failed_runs
    first = next((str(e).strip().splitlines()[0] for e in failed["error"] if isinstance(e, str) and e.strip()), "no error text")
    where = ", ".join(str(s.path) for s in results.dirs)
    raise AnalysisError(f"{where}: no successful cells — all {len(failed)} failed (first error: {first})")

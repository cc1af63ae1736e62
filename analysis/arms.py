"""Arms in the analysis: a framework at one set of versions. Results of different versions are never merged.

A run row's *identity* is its framework plus the versions it ran with of the packages that can change
its numbers: the framework's own package and the modules its adapter imports (``core.registry``:
keras + jax + jaxlib for ``keras_jax``), and every package an arm pinned (``runs.packages``) — as
the cell's process read them (``versions``, ``framework_version``), never as requested.

When one framework appears with several identities among the rows read (one sweep with arms, or
several directories taken before and after an upgrade), each identity becomes an arm with its own
label — ``keras_jax 3.15.1`` / ``keras_jax 3.14.0`` when only the framework's version differs, else
the differing packages in brackets (``keras_jax 3.15.1 (jax 0.10.2)``) — and that label replaces the
``framework`` column of runs, epochs and predictions (the original stays in ``framework_name``). The
statistics then pair arms exactly as they pair frameworks: by condition and seed, across directories.
A framework seen at one identity keeps its plain name, so nothing changes for ordinary results.

The same cell id with two identities (one grid, run before and after an upgrade) is made unique per
arm (``<cell id>@<label>``), so neither directory's rows replace the other's.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

import pandas as pd

from core.arms import canonical_name, pin_name
from core.registry import FRAMEWORKS

FRAMEWORK_ORDER: tuple[str, ...] = tuple(FRAMEWORKS)
#: Column that keeps the framework's registry name once ``framework`` holds an arm label.
BASE_COLUMN = "framework_name"
UNKNOWN = "versions unknown"


def base_name(label: str) -> str:
    """``keras_jax 3.14.0`` → ``keras_jax`` (registry names have no spaces)."""
    return str(label).split(" ", 1)[0]


def _descending(text: str) -> tuple:
    """A key that sorts version text newest first (numbers compared as numbers)."""
    return tuple((0, -int(t)) if t.isdigit() else (1, tuple(-ord(c) for c in t)) for t in re.findall(r"\d+|\D+", text))


def arm_sort_key(label: str) -> tuple:
    """Registry order of the framework, then its arms newest version first: pairs read "new vs old"."""
    base, _, rest = str(label).partition(" ")
    index = FRAMEWORK_ORDER.index(base) if base in FRAMEWORK_ORDER else len(FRAMEWORK_ORDER)
    return (index, base if index == len(FRAMEWORK_ORDER) else "", 1 if rest else 0, _descending(rest), str(label))


def _versions(row: Any) -> dict[str, str]:
    raw = getattr(row, "versions", None)
    try:
        parsed = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        parsed = {}
    out = {canonical_name(k): str(v) for k, v in parsed.items() if v is not None}
    fw = FRAMEWORKS.get(str(row.framework))
    fv = getattr(row, "framework_version", None)
    if fw is not None and isinstance(fv, str) and fv:
        out.setdefault(canonical_name(fw.package), fv)
    return out


def _pins(value: Any) -> list[str]:
    if not isinstance(value, str) or not value:
        return []
    return [n for n in (pin_name(p.strip()) for p in value.split(",")) if n]


def identity_packages(framework: str, pinned: Iterable[str] = ()) -> list[str]:
    """The packages whose versions make an arm: the framework's package first, its imports, the pins."""
    fw = FRAMEWORKS.get(framework)
    names = [canonical_name(fw.package), *(canonical_name(m) for m in fw.imports)] if fw else []
    names += sorted(canonical_name(p) for p in pinned)
    return list(dict.fromkeys(names))


def identities(runs: pd.DataFrame) -> pd.Series:
    """Per row: a tuple of (package, version or None) over its framework's identity packages; an
    empty tuple when no version is known (a cell that never reached its actor, older results)."""
    pinned: dict[str, set[str]] = {}
    if "packages" in runs:
        for fw, pins in zip(runs["framework"].astype(str), runs["packages"]):
            pinned.setdefault(fw, set()).update(_pins(pins))
    out = []
    for row in runs.itertuples(index=False):
        fw = str(row.framework)
        have = _versions(row)
        ident = tuple((p, have.get(p)) for p in identity_packages(fw, pinned.get(fw, ())))
        out.append(ident if any(v is not None for _, v in ident) else ())
    return pd.Series(out, index=runs.index, dtype=object)


def _labels(framework: str, idents: list[tuple]) -> dict[tuple, str]:
    """Labels for the distinct identities of one framework (only the packages that differ are named)."""
    package = identity_packages(framework)[0] if framework in FRAMEWORKS else None
    packages = list(dict.fromkeys(p for ident in idents for p, _ in ident))
    values = [dict(ident) for ident in idents]
    differing = [p for p in packages if len({v.get(p) for v in values}) > 1]

    def label(v: dict, show_absent: bool) -> str:
        head = f"{framework} {v.get(package) or '?'}" if package in differing else framework
        extra = [f"{p} {v.get(p) or 'absent'}" for p in differing if p != package and (v.get(p) or show_absent)]
        return head + (f" ({', '.join(extra)})" if extra else "")

    short = {ident: label(v, False) for ident, v in zip(idents, values)}
    if len(set(short.values())) == len(short):
        return short
    return {ident: label(v, True) for ident, v in zip(idents, values)}


def arm_labels(runs: pd.DataFrame) -> tuple[pd.Series, dict[str, list[str]]]:
    """(label per row, {framework: its arm labels} for the frameworks seen at several identities)."""
    idents = identities(runs)
    labels = runs["framework"].astype(str).copy()
    split: dict[str, list[str]] = {}
    for fw in sorted(labels.unique(), key=arm_sort_key):
        rows = labels.index[(runs["framework"].astype(str) == fw).to_numpy()]
        known = sorted({i for i in idents[rows] if i}, key=lambda i: json.dumps(i))
        if len(known) < 2:
            continue
        names = _labels(fw, known)
        labels[rows] = [names.get(i, f"{fw} ({UNKNOWN})") for i in idents[rows]]
        split[fw] = sorted(set(labels[rows]), key=arm_sort_key)
    return labels, split


def separate(runs: list[pd.DataFrame], epochs: list[pd.DataFrame | None], predictions: list[pd.DataFrame | None]
             ) -> tuple[list[pd.DataFrame], list[pd.DataFrame | None], list[pd.DataFrame | None], list[str]]:
    """Per results directory (lists aligned with the directories): each framework seen at several
    identities becomes one arm per identity (module doc). Returns the frames and a note per split."""
    if not runs:
        return runs, epochs, predictions, []
    every = pd.concat([r.assign(_dir=i) for i, r in enumerate(runs)], ignore_index=True)
    labels, split = arm_labels(every)
    if not split:
        return runs, epochs, predictions, []
    every[BASE_COLUMN] = every["framework"].astype(str)
    every["framework"] = labels.to_numpy()
    per_cell = every.groupby("cell_id")["framework"].nunique()
    clash = set(per_cell.index[per_cell > 1])  # one cell id, several arms: one grid run at other versions
    new_id = [f"{c}@{lab}" if c in clash else c for c, lab in zip(every["cell_id"], every["framework"])]
    every["cell_id"] = new_id
    notes = [f"{fw} ran at {len(arms)} sets of versions, analysed as separate arms (never averaged): "
             + "; ".join(f"{a} ({int((every['framework'] == a).sum())} cells)" for a in arms) for fw, arms in split.items()]
    out_runs, out_epochs, out_preds = [], [], []
    for i in range(len(runs)):
        part = every[every["_dir"] == i].drop(columns="_dir")
        out_runs.append(part.reset_index(drop=True))
        old = runs[i]["cell_id"].to_numpy()
        remap = pd.DataFrame({"cell_id": old, "_new": part["cell_id"].to_numpy(), "_fw": part["framework"].to_numpy()})
        remap = remap.drop_duplicates("cell_id")
        out_epochs.append(_relabel(epochs[i], remap))
        out_preds.append(_relabel(predictions[i], remap))
    return out_runs, out_epochs, out_preds, notes


def relabel_like(frames: list[pd.DataFrame | None], runs: list[pd.DataFrame]) -> list[pd.DataFrame | None]:
    """Per directory, another per-cell table (deployments) with the arm labels ``separate`` gave that
    directory's runs (matched by the cell id before any renaming: the row's framework and seed)."""
    out = []
    for frame, part in zip(frames, runs):
        if frame is None or not len(frame) or BASE_COLUMN not in part:
            out.append(frame)
            continue
        old = part["cell_id"].str.split("@").str[0]
        remap = pd.DataFrame({"cell_id": old.to_numpy(), "_new": part["cell_id"].to_numpy(),
                              "_fw": part["framework"].to_numpy()}).drop_duplicates("cell_id")
        out.append(_relabel(frame, remap))
    return out


def _relabel(frame: pd.DataFrame | None, remap: pd.DataFrame) -> pd.DataFrame | None:
    """A directory's epochs/predictions with that directory's new cell ids and arm labels (row order kept)."""
    if frame is None or not len(frame):
        return frame
    mapping = remap.set_index("cell_id")
    ids = frame["cell_id"]
    out = frame.copy()
    known = ids.isin(mapping.index)
    out.loc[known, "cell_id"] = mapping.loc[ids[known], "_new"].to_numpy()
    if "framework" in out:
        out.loc[known, "framework"] = mapping.loc[ids[known], "_fw"].to_numpy()
    return out


def version_text(runs: pd.DataFrame) -> list[str]:
    """Per row (``framework`` = the registry name): ``keras 3.14.0, jax 0.10.2, jaxlib 0.10.2`` — the
    versions of its identity packages that the row records."""
    out = []
    for row in runs.itertuples(index=False):
        have = _versions(row)
        parts = [f"{p} {have[p]}" for p in identity_packages(str(row.framework), _pins(getattr(row, "packages", None)))
                 if have.get(p)]
        out.append(", ".join(parts) or UNKNOWN)
    return out


def versions_compared(ok_runs: pd.DataFrame) -> list[dict[str, str]]:
    """For the report's first screen: each framework or arm with the versions it ran
    (``keras_jax 3.14.0``: ``keras 3.14.0, jax 0.10.2, jaxlib 0.10.2``), in display order."""
    if not len(ok_runs):
        return []
    base = ok_runs[BASE_COLUMN] if BASE_COLUMN in ok_runs else ok_runs["framework"]
    frame = ok_runs.assign(_base=base.astype(str).to_numpy())
    out = []
    for label in sorted(frame["framework"].astype(str).unique(), key=arm_sort_key):
        rows = frame[frame["framework"].astype(str) == label]
        fw = str(rows["_base"].iloc[0])
        found: dict[str, set[str]] = {}
        for row in rows.assign(framework=fw).itertuples(index=False):
            have = _versions(row)
            for p in identity_packages(fw, _pins(getattr(row, "packages", None))):
                if have.get(p):
                    found.setdefault(p, set()).add(have[p])
        text = ", ".join(f"{p} {' / '.join(sorted(v))}" for p, v in found.items()) or UNKNOWN
        out.append({"label": label, "framework": fw, "versions": text, "cells": str(len(rows))})
    return out

"""Matplotlib figures for the report, each returned as an inline ``data:image/svg+xml`` URI.

Over 400 lines on purpose: one function per report figure; they share the palette, markers and tick helpers kept here.

Figures go into ``<img>`` tags: an SVG loaded as an image can never run script, so text from the
data (class names, labels) cannot inject anything. Colours are the Okabe–Ito palette (safe for the
common colour-vision deficiencies) and every framework also gets its own marker.
"""
from __future__ import annotations

import base64
import io
from typing import Iterable

import matplotlib
import matplotlib.patches
import matplotlib.ticker

matplotlib.use("Agg")  # no display, no GUI toolkit import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.metrics import CONDITION_COLUMNS, METRICS, framework_sort_key  # noqa: E402
from core.registry import FRAMEWORKS  # noqa: E402

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
_FIXED = {name: f.colour for name, f in FRAMEWORKS.items()}  # core.registry
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
GREY = "#8c8c8c"

plt.rcParams.update({
    "svg.fonttype": "none",  # text stays text: small files, selectable labels
    "svg.hashsalt": "kvp-report",  # deterministic ids → reproducible report bytes
    "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
})


def framework_style(frameworks: Iterable[str]) -> dict[str, dict[str, str]]:
    """Colour and marker per framework — an arm (``keras_jax 3.14.0``, analysis.arms) takes its
    framework's colour when it is the first of that framework shown, else a spare one."""
    out = {}
    names = sorted(set(frameworks), key=framework_sort_key)
    spare = iter(c for c in OKABE_ITO if c not in {_FIXED.get(n) for n in names} | set(_FIXED.values()))
    used: set[str] = set()
    for i, fw in enumerate(names):
        colour = _FIXED.get(fw) or _FIXED.get(fw.split(" ", 1)[0])
        if colour is None or colour in used:
            colour = next(spare, GREY)
        used.add(colour)
        out[fw] = {"color": colour, "marker": _MARKERS[i % len(_MARKERS)]}
    return out


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _uri(fig: Figure | None) -> str | None:
    return None if fig is None else to_data_uri(fig)


def figure_text(uri: str | None) -> str:
    """The SVG source of a figure made by ``to_data_uri`` ("" for None): its labels are plain text."""
    if not uri:
        return ""
    return base64.b64decode(uri.split(",", 1)[1]).decode("utf-8")


def figure_has_text(uri: str | None, needle: str) -> bool:
    return needle in figure_text(uri)


def _wrap(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class RatioLocator(matplotlib.ticker.Locator):
    """Ticks for a log ratio axis at readable factors ("0.8×", "1.25×"), never closer together than
    1/``max_ticks`` of the axis in log space. 1× is always a tick when it is in view. Very narrow
    ranges (within ±25 %) get evenly spaced linear ticks (0.98, 0.99, 1, …) instead."""

    NICE = (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0,
            3.0, 4.0, 5.0, 10.0, 20.0, 50.0, 100.0)

    def __init__(self, max_ticks: int = 7):
        self.max_ticks = max_ticks

    def __call__(self):
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> np.ndarray:
        lo, hi = sorted((float(vmin), float(vmax)))
        lo = max(lo, 1e-12)
        hi = max(hi, lo * 1.0001)
        if hi / lo <= 1.25 * 1.25:
            linear = matplotlib.ticker.MaxNLocator(nbins=min(self.max_ticks - 1, 5), steps=[1, 2, 2.5, 5, 10])
            ticks = linear.tick_values(lo, hi)
            return np.round(ticks[(ticks >= lo) & (ticks <= hi) & (ticks > 0)], 10)
        gap = np.log(hi / lo) / self.max_ticks
        cands = [c for c in self.NICE if lo <= c <= hi]
        if not cands:
            return np.array([lo, hi])
        centre = np.sqrt(lo * hi)
        anchor = 1.0 if lo <= 1.0 <= hi else min(cands, key=lambda c: abs(np.log(c / centre)))
        kept = [anchor]
        for direction in (1, -1):
            last = anchor
            for c in sorted(cands, reverse=direction < 0):
                if direction * np.log(c / last) >= gap:
                    kept.append(c)
                    last = c
        return np.array(sorted(kept))


def _ratio_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(RatioLocator())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.10g}×"))


def forest_figure(pairs: pd.DataFrame, style: dict, max_rows: int = 40) -> Figure | None:
    """Paired differences (pp) and ratios (A/B, log axis) with CIs; the shaded band is the
    equivalence margin. ``pairs``: summary rows of kind ``pair`` for the metrics to show. The two
    panels are stacked, each row the same height, so labels keep the full width."""
    if pairs.empty:
        return None
    one_pair = pairs[["framework_a", "framework_b"]].drop_duplicates().shape[0] == 1
    panels = []
    for kind in ("difference", "ratio"):
        p = pairs[pairs["comparison"] == kind]
        if len(p):
            panels.append((kind, p.head(max_rows), len(p)))
    heights = [0.26 * len(rows) + 0.9 for _, rows, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9.0, sum(heights) + 0.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (kind, rows, total) in zip(axes[:, 0], panels):
        y = np.arange(len(rows))[::-1]
        labels = []
        previous_metric = None
        for yi, r in zip(y, rows.itertuples(index=False)):
            if previous_metric is not None and r.metric != previous_metric:
                ax.axhline(yi + 0.5, color=GREY, lw=0.5, alpha=0.6)  # between metric groups
            previous_metric = r.metric
            colour = style.get(r.winner, {}).get("color", GREY) if r.winner else GREY
            has_ci = np.isfinite(r.ci_low) and np.isfinite(r.ci_high)
            if has_ci:
                ax.plot([r.ci_low, r.ci_high], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
            ax.plot([r.estimate], [yi], marker="o" if has_ci else "x", color=colour, ms=5)
            who = "" if one_pair else f" · {r.framework_a} vs {r.framework_b}"
            where = "" if r.condition == "all runs" else f" · {r.condition}"
            name = METRICS[r.metric].label.split(" (")[0]
            labels.append(_wrap(f"{name}{who}{where}" + ("" if has_ci else " (1 seed)"), 70))
        lo, hi = rows["margin_low"].min(), rows["margin_high"].max()
        first = rows.iloc[0]
        pair_text = f"A = {first.framework_a}, B = {first.framework_b}" if one_pair else "A, B as labelled"
        if kind == "ratio":
            _ratio_axis(ax)
            ax.axvline(1.0, color="black", lw=0.8)
            ax.set_xlabel(f"ratio A / B ({pair_text}; geometric mean over seeds; < 1: A smaller)")
        else:
            ax.axvline(0.0, color="black", lw=0.8)
            ax.set_xlabel(f"difference A − B ({pair_text}; percentage points)")
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(lo, hi, color="#bbbbbb", alpha=0.35, lw=0, label="equivalence margin")
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", alpha=0)
        if total > len(rows):
            ax.set_title(f"first {len(rows)} of {total} rows; all of them are in the tables", fontsize=8, loc="left")
        if ax is axes[0, 0]:  # the band means the same in both panels: say it once
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def forest_plot(pairs: pd.DataFrame, style: dict, max_rows: int = 40) -> str | None:
    """``forest_figure`` as an inline SVG data URI (None when there is nothing to draw)."""
    return _uri(forest_figure(pairs, style, max_rows))


def _better(metric: str, a: float, b: float) -> int:
    """+1 when ``a`` is better than ``b`` on ``metric``, −1 when worse, 0 on a tie."""
    if a == b:
        return 0
    return 1 if (a > b) == METRICS[metric].higher_is_better else -1


def paired_seed_figure(runs: pd.DataFrame, metrics: list[str], frameworks: list[str], conditions: pd.DataFrame,
                     style: dict, max_conditions: int = 6) -> Figure | None:
    """One line per seed joining framework A and B (rows: metrics, columns: conditions). A line takes
    the colour of the framework that did better on that seed, so "B wins on 5 of 5 seeds" is visible
    at a glance; the panel title counts it. ``runs`` needs a ``condition_id`` column."""
    if len(frameworks) < 2 or runs.empty:
        return None
    a, b = frameworks[:2]
    metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
    conds = conditions[conditions["condition_id"].isin(runs["condition_id"])].head(max_conditions)
    if not metrics or conds.empty:
        return None
    n_cols = len(conds)
    one = n_cols == 1  # a single condition: the metrics side by side instead of stacked
    grid = (1, len(metrics)) if one else (len(metrics), n_cols)
    fig, axes = plt.subplots(*grid, figsize=(3.4 * grid[1] if one else max(2.6 * n_cols, 4.0), 2.8 * grid[0]),
                             squeeze=False)
    for i, metric in enumerate(metrics):
        info = METRICS[metric]
        scale = 100.0 if info.proportion else 1.0
        unit = "%" if info.proportion else info.unit
        for j, cond in enumerate(conds.itertuples(index=False)):
            ax = axes[0][i] if one else axes[i][j]
            sub = runs[runs["condition_id"] == cond.condition_id]
            wide = sub.pivot_table(index="seed", columns="framework", values=metric, aggfunc="mean") * scale
            if a not in wide or b not in wide or wide[[a, b]].dropna().empty:
                ax.set_visible(False)
                continue
            wide = wide[[a, b]].dropna()
            wins = {a: 0, b: 0}
            for _, (va, vb) in wide.iterrows():
                side = _better(metric, va, vb)
                colour = style[a]["color"] if side > 0 else style[b]["color"] if side < 0 else GREY
                if side:
                    wins[a if side > 0 else b] += 1
                ax.plot([0, 1], [va, vb], color=colour, lw=1.4, zorder=1)
            for x, fw in enumerate((a, b)):
                ax.scatter(np.full(len(wide), x), wide[fw], color=style[fw]["color"], marker=style[fw]["marker"], s=16,
                           edgecolor="white", linewidth=0.4, zorder=2)
            ax.set_xticks([0, 1], [a, b])
            ax.set_xlim(-0.3, 1.3)
            n = len(wide)
            ties = n - wins[a] - wins[b]
            leader = max(wins, key=wins.get)
            if wins[leader] * 2 > n:
                tally = f"{leader} {info.better_word} on {wins[leader]} of {n} seeds"
            else:
                tally = f"{a} {wins[a]}, {b} {wins[b]}" + (f", tied {ties}" if ties else "") + f" of {n} seeds"
            head = "" if cond.condition == "all runs" else _wrap(cond.condition, 32) + "\n"
            ax.set_title(head + tally, fontsize=8)
            if one or j == 0:
                ax.set_ylabel(_wrap(info.label.split(" (")[0], 26) + (f" [{unit}]" if unit else ""))
    fig.tight_layout()
    return fig


def paired_seed_plot(runs: pd.DataFrame, metrics: list[str], frameworks: list[str], conditions: pd.DataFrame,
                     style: dict, max_conditions: int = 6) -> str | None:
    """``paired_seed_figure`` as an inline SVG data URI (None when there is nothing to draw)."""
    return _uri(paired_seed_figure(runs, metrics, frameworks, conditions, style, max_conditions))


def seed_strip_plot(runs: pd.DataFrame, metrics: list[str], frameworks: list[str], style: dict) -> str | None:
    """One panel per metric: every seed as a dot, the same seed joined across frameworks (the
    pairing the tests use), and the mean as a black bar."""
    metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
    if not metrics or runs.empty:
        return None
    cols = min(4, len(metrics))
    rows_n = int(np.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(2.8 * cols, 2.5 * rows_n), squeeze=False)
    xs = {fw: i for i, fw in enumerate(frameworks)}
    for ax, metric in zip(axes.flat, metrics):
        info = METRICS[metric]
        scale = 100.0 if info.proportion else 1.0
        wide = runs.pivot_table(index="seed", columns="framework", values=metric, aggfunc="mean") * scale
        for _, seed_row in wide.iterrows():
            pts = [(xs[fw], seed_row[fw]) for fw in frameworks if fw in seed_row and np.isfinite(seed_row[fw])]
            if len(pts) > 1:
                ax.plot(*zip(*pts), color=GREY, lw=0.6, alpha=0.6, zorder=1)
        for fw in frameworks:
            if fw not in wide:
                continue
            v = wide[fw].dropna().to_numpy()
            ax.scatter(np.full(v.size, xs[fw]), v, color=style[fw]["color"], marker=style[fw]["marker"], s=18,
                       zorder=2, edgecolor="white", linewidth=0.4)
            if v.size:
                ax.plot([xs[fw] - 0.25, xs[fw] + 0.25], [v.mean()] * 2, color="black", lw=1.5, zorder=3)
        ax.set_xticks(range(len(frameworks)), frameworks, rotation=20)
        ax.set_xlim(-0.6, len(frameworks) - 0.4)
        unit = "%" if info.proportion else info.unit
        ax.set_title(_wrap(info.label.split(" (")[0], 34) + (f" [{unit}]" if unit else ""))
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_data_uri(fig)


# The range a learning-curve metric can take: the ± 1 sd band is clipped to it.
_CURVE_RANGE = {"loss": (0.0, np.inf), "accuracy": (0.0, 1.0)}


def learning_curves_figure(epochs: pd.DataFrame, style: dict) -> Figure | None:
    """Mean over seeds per epoch (numbered 1..N), band = ± 1 standard deviation over seeds (none for
    one seed), clipped to the metric's range (loss ≥ 0, accuracy in [0, 1]). None for a single
    epoch: a curve needs two points (the final values are in the tables)."""
    if epochs is None or epochs.empty or epochs["epoch"].nunique() < 2:
        return None
    panels = [("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_accuracy", "val_accuracy"])]
    panels = [(t, [c for c in cols if c in epochs and epochs[c].notna().any()]) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    if not panels:
        return None
    # Tables written with 0-based epochs are shown 1..N, like the logs.
    first_epoch = 1 - int(epochs["epoch"].min() == 0)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels):
        low, high = _CURVE_RANGE[title]
        for fw, grp in sorted(epochs.groupby("framework"), key=lambda kv: framework_sort_key(kv[0])):
            for col in cols:
                agg = grp.groupby("epoch")[col].agg(["mean", "std", "count"])
                x = agg.index.to_numpy() + (1 - first_epoch)
                ls = "-" if col.startswith("train") else "--"
                ax.plot(x, agg["mean"], ls=ls, color=style[fw]["color"], marker=style[fw]["marker"], ms=3,
                        label=f"{fw} {col.split('_')[0]}")
                band = agg["std"].fillna(0).to_numpy()
                if (agg["count"] > 1).any():
                    ax.fill_between(x, np.clip(agg["mean"] - band, low, high), np.clip(agg["mean"] + band, low, high),
                                    color=style[fw]["color"], alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(title + " (solid: train, dashed: validation)")
    # One legend for both panels, under them: inside, it sits on the curves.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


def learning_curves(epochs: pd.DataFrame, style: dict) -> str | None:
    """``learning_curves_figure`` as an inline SVG data URI (None when there is nothing to draw)."""
    return _uri(learning_curves_figure(epochs, style))


def reach_figure(curves: dict[str, dict[str, np.ndarray]], epochs: pd.DataFrame | None, target: str,
                 style: dict) -> str | None:
    """Time to target, the survival view: per framework the share of seeds that have reached the target
    against training seconds and against epochs (steps; a curve that stays below 1 has censored seeds),
    and the validation curve of every seed with the target as a line. Inline SVG, or None."""
    if not curves:
        return None
    metric = target.split()[0] if target else "val_accuracy"
    threshold = float(target.split()[-1]) if target and target.split()[-1].replace(".", "", 1).isdigit() else None
    has_val = epochs is not None and not epochs.empty and metric in epochs and epochs[metric].notna().any()
    fig, axes = plt.subplots(1, 3 if has_val else 2, figsize=(13.5 if has_val else 9.0, 3.1), squeeze=False)
    for fw in sorted(curves, key=framework_sort_key):
        c, s = curves[fw], style[fw]
        label = f"{fw} ({int(c['reached'][0])}/{int(c['n'][0])} reached)"
        axes[0][0].step(c["seconds"], c["share"], where="post", color=s["color"], label=label)
        axes[0][1].step(c["epochs"], c["share_by_epoch"], where="post", color=s["color"], label=label)
    axes[0][0].set_xlabel("training seconds (validation excluded)")
    axes[0][1].set_xlabel("epoch")
    axes[0][1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes[0][:2]:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("share of seeds at the target")
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    axes[0][0].set_title(f"reached {target}", fontsize=9)
    if has_val:
        ax = axes[0][2]
        for (fw, _), grp in sorted(epochs.groupby(["framework", "cell_id"]), key=lambda kv: framework_sort_key(kv[0][0])):
            grp = grp.sort_values("epoch")
            ax.plot(grp["epoch"], grp[metric], color=style[fw]["color"], lw=0.8, alpha=0.7)
        if threshold is not None:
            ax.axhline(threshold, color=GREY, ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title("validation, one line per seed (dashed: the target)", fontsize=9)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    return _uri(fig)


# ROC curves are averaged on this FPR grid: linear over [0, 1] plus log-spaced points near 0, so a
# zoom into the top-left corner still has resolution.
_FPR_GRID = np.unique(np.concatenate([np.linspace(0, 1, 201), np.geomspace(1e-4, 0.05, 120)]))


def roc_zoom_box(curves: dict[str, np.ndarray], grid: np.ndarray = _FPR_GRID) -> tuple[float, float] | None:
    """(largest FPR, smallest TPR) of a top-left zoom when every mean curve hugs that corner — all
    reach TPR 0.9 by FPR 0.1, where full-size curves are indistinguishable — else None."""
    if not curves:
        return None
    at = grid <= 0.1
    if any(c[at].max() < 0.9 for c in curves.values()):
        return None
    # Zoom out to where the slowest curve reaches 0.99 (at least 1 %, at most 20 % FPR)…
    reach = max(grid[np.argmax(c >= min(0.99, c.max()))] for c in curves.values())
    x_max = float(np.clip(reach * 1.5, 0.01, 0.2))
    # …and down to the lowest TPR any curve shows inside that window, ignoring its first tenth, where
    # every curve climbs from its value at FPR 0 (they enter the zoom from below).
    window = (grid >= x_max / 10) & (grid <= x_max)
    y_min = min(float(c[window].min()) for c in curves.values())
    y_min = float(np.clip(np.floor((y_min - 0.02) * 50) / 50, 0.0, 0.98))
    return x_max, y_min


def roc_curves_figure(preds: pd.DataFrame, scores: np.ndarray, style: dict) -> Figure | None:
    """ROC per framework (binary: positive class; multi-class: micro-averaged one-vs-rest), mean TPR
    over seeds on a common FPR grid, band ± 1 sd over seeds. When the curves crowd the top-left
    corner a second panel zooms into it."""
    from sklearn.metrics import roc_curve

    if preds.empty or scores is None:
        return None
    grid = _FPR_GRID
    k = scores.shape[1]
    curves: dict[str, np.ndarray] = {}
    bands: dict[str, np.ndarray | None] = {}
    counts: dict[str, int] = {}
    for fw, grp in sorted(preds.groupby("framework"), key=lambda kv: framework_sort_key(kv[0])):
        tprs = []
        for _, cell in grp.groupby("cell_id"):
            y = cell["y_true"].to_numpy()
            s = scores[cell["_row"].to_numpy()]
            if k == 2:
                truth, score = (y == 1).astype(int), s[:, 1]
            else:
                truth, score = (y[:, None] == np.arange(k)[None, :]).astype(int).ravel(), s.ravel()
            if truth.min() == truth.max():
                continue  # one class only: no ROC
            fpr, tpr, _ = roc_curve(truth, score)
            tprs.append(np.interp(grid, fpr, tpr))
        if not tprs:
            continue
        tprs = np.array(tprs)
        curves[fw] = tprs.mean(axis=0)
        bands[fw] = tprs.std(axis=0, ddof=1) if len(tprs) > 1 else None
        counts[fw] = len(tprs)
    if not curves:
        return None
    zoom = roc_zoom_box(curves, grid)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(8.4 if zoom else 4.2, 4.0), squeeze=False)
    for ax in axes[0]:
        for fw, mean in curves.items():
            ax.plot(grid, mean, color=style[fw]["color"], label=f"{fw} (n={counts[fw]})")
            if bands[fw] is not None:
                ax.fill_between(grid, np.clip(mean - bands[fw], 0, 1), np.clip(mean + bands[fw], 0, 1),
                                color=style[fw]["color"], alpha=0.15, lw=0)
        ax.plot([0, 1], [0, 1], color=GREY, lw=0.8, ls=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    main = axes[0][0]
    main.set_title("ROC" + (" (micro-averaged one-vs-rest)" if k > 2 else ""))
    main.legend(fontsize=7, frameon=False, loc="lower right")
    if zoom:
        x_max, y_min = zoom
        ax = axes[0][1]
        ax.set_xlim(0, x_max)
        ax.set_ylim(y_min, 1.0)
        ax.set_title(f"top-left corner (FPR ≤ {x_max:g}, TPR ≥ {y_min:g})")
        main.add_patch(matplotlib.patches.Rectangle((0, y_min), x_max, 1 - y_min, fill=False, ec="black", lw=0.8))
    fig.tight_layout()
    return fig


def roc_curves(preds: pd.DataFrame, scores: np.ndarray, style: dict) -> str | None:
    """``roc_curves_figure`` as an inline SVG data URI (None when there is nothing to draw)."""
    return _uri(roc_curves_figure(preds, scores, style))


def confusion_matrices(matrices: dict[str, np.ndarray], classes: list[str]) -> str | None:
    """Side by side, summed over seeds, rows normalised to recall (%), counts in the cells."""
    if not matrices:
        return None
    n = len(matrices)
    k = next(iter(matrices.values())).shape[0]
    size = max(2.8, 0.45 * k + 1.5)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
    labels = [_wrap(c, 14) for c in classes] if len(classes) == k else [str(i) for i in range(k)]
    for ax, (fw, cm) in zip(axes[0], matrices.items()):
        with np.errstate(invalid="ignore", divide="ignore"):
            norm = cm / cm.sum(axis=1, keepdims=True) * 100
        ax.imshow(np.nan_to_num(norm), cmap="cividis", vmin=0, vmax=100)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                            color="black" if np.nan_to_num(norm[i, j]) > 60 else "white")
        ax.set_xticks(range(k), labels, rotation=60, ha="right")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(fw)
        ax.grid(False)
    fig.tight_layout()
    return to_data_uri(fig)


SPEED_METRICS = ("median_epoch_seconds", "images_per_second", "latency_p50_ms", "throughput_images_per_second")
_LINESTYLES = ["-", "--", ":", "-."]


def _varying(rows: pd.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in rows and rows[c].astype("string").fillna("∅").nunique() > 1]


def speed_axis(framework_rows: pd.DataFrame) -> str | None:
    """The axis the speed figure plots against: ``batch_size`` when it varies, else ``device_label``
    when the device varies, else None (nothing to plot against: one value is a single dot)."""
    rows = framework_rows[framework_rows["metric"].isin(SPEED_METRICS)]
    if "batch_size" in _varying(rows, ["batch_size"]):
        return "batch_size"
    if "device_label" in _varying(rows, ["device_label"]):
        return "device_label"
    return None


def scaling_figure(framework_rows: pd.DataFrame, style: dict) -> Figure | None:
    """Speed by batch size (log₂ axis) or, when only the device varies, by device: mean over seeds
    with CI whiskers, one line per framework and per value of every other varying condition
    (line style). None when neither batch size nor device varies."""
    rows = framework_rows[framework_rows["metric"].isin(SPEED_METRICS)]
    x_col = speed_axis(framework_rows)
    if rows.empty or x_col is None:
        return None
    others = [c for c in _varying(rows, (*CONDITION_COLUMNS, "device_label"))
              if c not in ("batch_size", "device_kind", "device_name")]
    if x_col in others:
        others.remove(x_col)

    def other_label(r) -> str:
        return " · ".join(str(getattr(r, c)) for c in others)

    rows = rows.assign(_other=[other_label(r) for r in rows.itertuples(index=False)])
    other_values = sorted(rows["_other"].unique())
    metrics = [m for m in SPEED_METRICS if (rows["metric"] == m).any()]
    x_values = sorted(rows[x_col].dropna().unique())
    series = sorted({(fw, o) for fw, o in zip(rows["framework"], rows["_other"])},
                    key=lambda t: (framework_sort_key(t[0]), t[1]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = rows[rows["metric"] == metric]
        for k, (fw, other) in enumerate(series):
            grp = sub[(sub["framework"] == fw) & (sub["_other"] == other)]
            if grp.empty:
                continue
            grp = grp.groupby(x_col)[["estimate", "ci_low", "ci_high"]].mean().sort_index()
            nudge = k - (len(series) - 1) / 2  # series side by side, so the whiskers do not overlap
            if x_col == "batch_size":
                x = grp.index.to_numpy(dtype=float) * 2 ** (0.03 * nudge)
            else:  # categorical devices
                x = np.array([x_values.index(v) for v in grp.index], dtype=float) + 0.06 * nudge
            err = np.vstack([grp["estimate"] - grp["ci_low"], grp["ci_high"] - grp["estimate"]])
            err = np.where(np.isfinite(err), err, 0)
            ax.errorbar(x, grp["estimate"], yerr=err, color=style[fw]["color"], marker=style[fw]["marker"], ms=4,
                        ls=_LINESTYLES[other_values.index(other) % len(_LINESTYLES)], capsize=2,
                        label=f"{fw} · {other}" if other else fw)
        if x_col == "batch_size":
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(x_values))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.set_xlabel("training batch size")
        else:
            ax.set_xticks(range(len(x_values)), [_wrap(str(v), 18) for v in x_values], rotation=15)
            ax.set_xlim(-0.5, len(x_values) - 0.5)
            ax.set_xlabel("device")
        info = METRICS[metric]
        ax.set_title(f"{_wrap(info.label.split(' (')[0], 30)} [{info.unit}]")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


def scaling_plot(framework_rows: pd.DataFrame, style: dict) -> str | None:
    """``scaling_figure`` as an inline SVG data URI (None when there is nothing to draw)."""
    return _uri(scaling_figure(framework_rows, style))


def memory_plot(framework_rows: pd.DataFrame, style: dict) -> str | None:
    """Peak memory per condition and framework (MiB), mean with CI whiskers."""
    metrics = [m for m in ("peak_host_rss_fresh_mib", "peak_device_memory_fresh_mib", "peak_host_rss_mib",
                           "peak_device_memory_mib") if (framework_rows["metric"] == m).any()]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = framework_rows[framework_rows["metric"] == metric]
        conds = list(dict.fromkeys(sub.sort_values("condition_id")["condition"]))
        fws = sorted(sub["framework"].unique(), key=framework_sort_key)
        width = 0.8 / len(fws) if len(conds) > 1 else 0.3  # one condition: two slim bars, not a wall
        for i, fw in enumerate(fws):
            part = sub[sub["framework"] == fw].set_index("condition").reindex(conds)
            x = np.arange(len(conds)) + (i - (len(fws) - 1) / 2) * width
            err = np.vstack([part["estimate"] - part["ci_low"], part["ci_high"] - part["estimate"]])
            err = np.where(np.isfinite(err), err, 0)
            ax.bar(x, part["estimate"], width, yerr=err, color=style[fw]["color"], label=fw, capsize=2)
        ax.set_xticks(range(len(conds)), [_wrap(c, 28) for c in conds], rotation=20 if len(conds) > 1 else 0,
                      ha="right" if len(conds) > 1 else "center")
        ax.set_ylabel(METRICS[metric].unit)  # MiB (2**20 bytes), as the runner records it
        ax.set_title(_wrap(f"{METRICS[metric].label} [{METRICS[metric].unit}]", 40), fontsize=9)
        if len(conds) == 1:
            ax.set_xlim(-0.75, 0.75)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_data_uri(fig)

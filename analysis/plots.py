"""Matplotlib figures for the report, each returned as an inline ``data:image/svg+xml`` URI.

Figures go into ``<img>`` tags: an SVG loaded as an image can never run script, so text from the
data (class names, labels) cannot inject anything. Colours are the Okabe–Ito palette (safe for the
common colour-vision deficiencies) and every framework also gets its own marker.
"""
from __future__ import annotations

import base64
import io
from typing import Iterable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display, no GUI toolkit import
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.metrics import METRICS, framework_sort_key  # noqa: E402

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
_FIXED = {"keras": "#0072B2", "pytorch": "#D55E00", "keras_jax": "#009E73", "keras_torch": "#CC79A7",
          "fake": "#E69F00"}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
GREY = "#8c8c8c"

plt.rcParams.update({
    "svg.fonttype": "none",  # text stays text: small files, selectable labels
    "svg.hashsalt": "kvp-report",  # deterministic ids → reproducible report bytes
    "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
})


def framework_style(frameworks: Iterable[str]) -> dict[str, dict[str, str]]:
    out = {}
    spare = iter(c for c in OKABE_ITO if c not in _FIXED.values())
    for i, fw in enumerate(sorted(set(frameworks), key=framework_sort_key)):
        out[fw] = {"color": _FIXED.get(fw) or next(spare, GREY), "marker": _MARKERS[i % len(_MARKERS)]}
    return out


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _wrap(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def forest_plot(pairs: pd.DataFrame, style: dict, max_rows: int = 40) -> str | None:
    """Paired differences (pp) and ratios (A/B, log axis) with CIs; the shaded band is the
    equivalence margin. ``pairs``: summary rows of kind ``pair`` for the metrics to show."""
    if pairs.empty:
        return None
    panels = [("difference", pairs[pairs["comparison"] == "difference"]),
              ("ratio", pairs[pairs["comparison"] == "ratio"])]
    panels = [(k, p.head(max_rows)) for k, p in panels if len(p)]
    height = max(2.5, 0.28 * max(len(p) for _, p in panels) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), height), squeeze=False)
    for ax, (kind, rows) in zip(axes[0], panels):
        y = np.arange(len(rows))[::-1]
        labels = []
        for yi, r in zip(y, rows.itertuples(index=False)):
            colour = style.get(r.winner, {}).get("color", GREY) if r.winner else GREY
            has_ci = np.isfinite(r.ci_low) and np.isfinite(r.ci_high)
            if has_ci:
                ax.plot([r.ci_low, r.ci_high], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
            ax.plot([r.estimate], [yi], marker="o" if has_ci else "x", color=colour, ms=5)
            labels.append(_wrap(f"{METRICS[r.metric].label.split(' (')[0]} · {r.framework_a} vs {r.framework_b}"
                                f" · {r.condition}" + ("" if has_ci else " (1 seed)")))
        lo, hi = rows["margin_low"].min(), rows["margin_high"].max()
        if kind == "ratio":
            ax.set_xscale("log")
            _ratio_ticks(ax, rows)
            ax.axvline(1.0, color="black", lw=0.8)
            ax.set_xlabel("ratio A / B (geometric mean over seeds; < 1: A smaller)")
        else:
            ax.axvline(0.0, color="black", lw=0.8)
            ax.set_xlabel("difference A − B (percentage points; log loss: nats)")
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(lo, hi, color="#bbbbbb", alpha=0.35, lw=0, label="equivalence margin")
        ax.set_yticks(y, labels)
        ax.grid(axis="y", alpha=0)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def _ratio_ticks(ax, rows: pd.DataFrame) -> None:
    """Readable ticks on a log ratio axis ("0.8×", "1.25×") instead of powers of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = pd.concat([rows["ci_low"], rows["ci_high"], rows["estimate"], rows["margin_low"], rows["margin_high"]])
    values = values[np.isfinite(values) & (values > 0)]
    lo, hi = (values.min(), values.max()) if len(values) else (0.9, 1.1)
    candidates = np.array([0.05, 0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2, 3, 4, 5,
                           10, 20])
    ticks = candidates[(candidates >= lo / 1.05) & (candidates <= hi * 1.05)]
    if ticks.size < 3:
        ticks = np.unique(np.round(np.geomspace(lo, hi, 4), 3))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


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


def learning_curves(epochs: pd.DataFrame, style: dict) -> str | None:
    """Mean over seeds per epoch, band = ± 1 standard deviation over seeds (none for one seed)."""
    if epochs is None or epochs.empty:
        return None
    panels = [("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_accuracy", "val_accuracy"])]
    panels = [(t, [c for c in cols if c in epochs and epochs[c].notna().any()]) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.0), squeeze=False)
    for ax, (title, cols) in zip(axes[0], panels):
        for fw, grp in sorted(epochs.groupby("framework"), key=lambda kv: framework_sort_key(kv[0])):
            for col in cols:
                agg = grp.groupby("epoch")[col].agg(["mean", "std", "count"])
                x = agg.index.to_numpy() + 1
                ls = "-" if col.startswith("train") else "--"
                ax.plot(x, agg["mean"], ls=ls, color=style[fw]["color"], marker=style[fw]["marker"], ms=3,
                        label=f"{fw} {col.split('_')[0]}")
                band = agg["std"].fillna(0).to_numpy()
                if (agg["count"] > 1).any():
                    ax.fill_between(x, agg["mean"] - band, agg["mean"] + band, color=style[fw]["color"], alpha=0.15,
                                    lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(title + " (solid: train, dashed: validation)")
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def roc_curves(preds: pd.DataFrame, scores: np.ndarray, style: dict) -> str | None:
    """ROC per framework (binary: positive class; multi-class: micro-averaged one-vs-rest), mean TPR
    over seeds on a common FPR grid, band ± 1 sd over seeds."""
    from sklearn.metrics import roc_curve

    if preds.empty or scores is None:
        return None
    grid = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    k = scores.shape[1]
    drawn = False
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
        mean = tprs.mean(axis=0)
        ax.plot(grid, mean, color=style[fw]["color"], label=f"{fw} (n={len(tprs)})")
        if len(tprs) > 1:
            sd = tprs.std(axis=0, ddof=1)
            ax.fill_between(grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=style[fw]["color"],
                            alpha=0.15, lw=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([0, 1], [0, 1], color=GREY, lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC" + (" (micro-averaged one-vs-rest)" if k > 2 else ""))
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    return to_data_uri(fig)


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


def scaling_plot(framework_rows: pd.DataFrame, style: dict) -> str | None:
    """Mean ± CI by batch size; one line per framework and device (line style = device)."""
    wanted = ["median_epoch_seconds", "images_per_second", "latency_p50_ms", "throughput_images_per_second"]
    rows = framework_rows[framework_rows["metric"].isin(wanted)]
    if rows.empty:
        return None
    metrics = [m for m in wanted if (rows["metric"] == m).any()]
    devices = sorted(rows["device_label"].unique())
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = rows[rows["metric"] == metric]
        for (fw, dev), grp in sub.groupby(["framework", "device_label"]):
            grp = grp.groupby("batch_size")[["estimate", "ci_low", "ci_high"]].mean().sort_index()
            x = grp.index.to_numpy(dtype=float)
            err = np.vstack([grp["estimate"] - grp["ci_low"], grp["ci_high"] - grp["estimate"]])
            err = np.where(np.isfinite(err), err, 0)
            ax.errorbar(x, grp["estimate"], yerr=err, color=style[fw]["color"], marker=style[fw]["marker"], ms=4,
                        ls=styles[devices.index(dev) % len(styles)], capsize=2,
                        label=f"{fw} · {dev}" if len(devices) > 1 else fw)
        sizes = sorted(sub["batch_size"].dropna().unique())
        if len(sizes) > 1:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sizes))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("batch size")
        info = METRICS[metric]
        ax.set_title(f"{_wrap(info.label.split(' (')[0], 30)} [{info.unit}]")
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def memory_plot(framework_rows: pd.DataFrame, style: dict) -> str | None:
    """Peak memory per condition and framework, mean with CI whiskers."""
    metrics = [m for m in ("peak_host_rss_mb", "peak_device_memory_mb") if (framework_rows["metric"] == m).any()]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sub = framework_rows[framework_rows["metric"] == metric]
        conds = list(dict.fromkeys(sub.sort_values("condition_id")["condition"]))
        fws = sorted(sub["framework"].unique(), key=framework_sort_key)
        width = 0.8 / len(fws)
        for i, fw in enumerate(fws):
            part = sub[sub["framework"] == fw].set_index("condition").reindex(conds)
            x = np.arange(len(conds)) + (i - (len(fws) - 1) / 2) * width
            err = np.vstack([part["estimate"] - part["ci_low"], part["ci_high"] - part["estimate"]])
            err = np.where(np.isfinite(err), err, 0)
            ax.bar(x, part["estimate"], width, yerr=err, color=style[fw]["color"], label=fw, capsize=2)
        ax.set_xticks(range(len(conds)), [_wrap(c, 28) for c in conds], rotation=20, ha="right")
        ax.set_ylabel("MB")
        ax.set_title(METRICS[metric].label)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_data_uri(fig)

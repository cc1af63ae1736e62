"""The report: renders from a synthetic sweep, escapes everything, needs no network, opens in Chromium;
the CLI refuses bad input with one clear message and writes nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import build_report
from analysis.__main__ import main
from analysis.loc import count_file, count_regions
from analysis.report import gate_view
from core.gate import GateCheck, GateRecord
from analysis.summary import SUMMARY_COLUMNS
from analysis_support import make_sweep
from runner.store import fragments as rr

SCRIPT = "<script>alert('x')</script>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root, seeds=range(4), batch_sizes=(32, 64), speed={"keras": 1.0, "pytorch": 0.7},
               failed=[("keras", 3)], config={"model": {"name": SCRIPT}, "report": {"n_resamples": 200}},
               split_hash={("pytorch", 2): "different-split"})
    out = tmp_path_factory.mktemp("out")
    paths = build_report([root], out, {"enabled": True, "n_resamples": 200, "confidence": 0.95, "random_state": 0,
                                       "margin_quality_pp": 1.0, "margin_time_ratio": 0.05, "alpha": 0.05})
    return root, out, paths, paths["report"].read_text(encoding="utf-8")


def test_build_report_writes_both_files(built):
    _, out, paths, html = built
    assert paths == {"summary": out / "summary.parquet", "report": out / "report.html"}
    summary = pq.read_table(paths["summary"]).to_pandas()
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert set(summary["row_kind"]) == {"framework", "pair", "mcnemar"}
    assert not list(out.glob(".*tmp"))  # no temp files left behind


def test_first_screen_is_the_verdict_table(built):
    html = built[3]
    verdict_at = html.index('id="verdict-table"')
    assert verdict_at < html.index('id="metrics"') < html.index('id="parity"')
    table = html[verdict_at: html.index("</table>", verdict_at)]
    assert "keras vs pytorch" in table and "Epoch time" in table and "Accuracy" in table
    assert "pytorch 1.4" in table and "faster" in table  # the planted 0.7× epoch time, in words
    # 3 paired seeds are enough for a 1.43× speed difference: a verdict, not a request for more seeds
    assert "pytorch better (exceeds the margin)" in table
    assert "inconclusive — ~" in table and "seeds would settle it" in table  # the rest: a seeds hint
    # what each framework name means, from the registry (keras alone would not say which backend)
    assert "keras = Keras (TensorFlow); pytorch = PyTorch" in html[:verdict_at]
    assert "keras: Keras (TensorFlow), keras 9.9" in html and "pytorch: PyTorch, torch 9.9" in html
    assert "Images per second" not in table and "Training throughput" not in table  # duplicates are not headline
    assert "dropped keras: 1" not in table and "(dropped pytorch: 1)" in table  # keras seed 3 failed
    assert "PAIRING: " in html[:verdict_at] and "pytorch seed(s) 3 have no keras partner" in html[:verdict_at]


def test_every_string_from_data_is_escaped_and_nothing_is_fetched(built):
    html = built[3]
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<script" not in html.lower()  # the report has no script at all
    for attr in ('src="http', "src='http", 'href="http', "@import", "url(http"):
        assert attr not in html


def test_parity_audit_sections(built):
    html = built[3]
    assert "SPLIT MISMATCH" in html and "NO — MISMATCH" in html  # planted for seed 2
    assert "synthetic failure of keras seed 3" in html  # failed cell with its error
    assert "passed" in html[html.index('id="gate"'):]  # equivalence gate result
    gate = html[html.index('id="gate"'):html.index('id="splits"')]
    assert "one optimizer step compared" in gate and "small_cnn × synthetic" in gate
    assert "3e-07" in gate and "1234" in gate and "differs" in gate  # pairwise Δ, params, differing knob
    assert "batchnorm_momentum" in html  # knob table


def test_sections_present(built):
    html = built[3]
    for needle in ("Learning curves", "ROC curves", "Confusion matrices", "Per-class precision", "McNemar",
                   "Developer experience", "Training loop", "Resolved configuration", "Package versions",
                   'alt="Forest plot', 'alt="Per-seed paired values', 'alt="Speed by batch size', 'alt="Peak memory'):
        assert needle in html, needle
    assert html.count("data:image/svg+xml;base64,") >= 8


def test_loc_counter_on_a_marked_file(tmp_path):
    src = tmp_path / "adapter.py"
    src.write_text('''"""Module docstring."""
import os

# region: model-definition
def build():
    """Docstring: not code."""
    # a comment: not code

    x = 1
    return x
# endregion

class Trainer:
    # region: training-loop
    def fit(self):
        for _ in range(3):
            pass
    # endregion

# region: data-pipeline
def loader():
    return [
        1,
    ]
''')
    counts = count_regions(src)
    assert counts == {"model-definition": 3, "training-loop": 3, "data-pipeline": None}  # last one never closed
    assert count_regions(tmp_path / "missing.py") == {"model-definition": None, "training-loop": None,
                                                      "data-pipeline": None}
    assert count_file(src) == 12  # docstrings, comments and blank lines excluded


def test_gate_view_shows_a_check_of_the_record():
    comparison = {"passed": False, "reasons": ["keras vs pytorch: max |Δ logits| 0.5 > 0.0001"], "tolerance": 1e-4,
                  "param_counts": {"pytorch": {"trainable": 10, "total": 12}, "keras": {"trainable": 10, "total": 12}},
                  "pairs": [{"a": "keras", "b": "pytorch", "max_abs_delta_logits": 0.5, "passed": False}]}
    v = gate_view(GateCheck(model="small_cnn", data="synthetic", status="failed", comparison=comparison), "x.json", "d")
    assert v["status"] == "FAILED" and v["model"] == "small_cnn × synthetic"
    assert [p["framework"] for p in v["params"]] == ["keras", "pytorch"]
    assert v["pairs"][0]["pair"] == "keras vs pytorch" and v["pairs"][0]["status"] == "FAILED"
    assert v["notes"] == comparison["reasons"]
    err = gate_view(GateCheck(model="m", data="d", status="error", errors={"keras": "no running actor"}), "x", "d")
    assert err["status"] == "ERROR" and err["notes"] == ["keras: no running actor"]


def test_gate_records_skipped_and_not_run(tmp_path):
    from analysis.load import SweepDir
    from analysis.report import gate_views

    skipped = GateRecord(status="skipped", summary="fewer than two real frameworks (['fake'])")
    views = gate_views([SweepDir(tmp_path, {}, skipped, "parity_gate.json"),
                         SweepDir(tmp_path, {}, GateRecord.not_run(), "metadata"),
                         SweepDir(tmp_path, {}, None, "not run")])
    assert [v["status"] for v in views] == ["skipped", "not run", "not run"]
    assert views[0]["notes"] == ["fewer than two real frameworks (['fake'])"]


@pytest.mark.parametrize("change, needle", [
    ({"schema_version": 7}, "version 7 is unknown to this code (it reads version 1)"),
    ({"schema_version": None}, "version None is unknown"),
    ({"verdict": "ok"}, "unknown field(s) ['verdict']"),
    ({"status": "fine"}, "status 'fine' is not one of"),
])
def test_a_gate_record_of_unknown_version_or_shape_is_refused(tmp_path, change, needle):
    from analysis.options import AnalysisError

    root = make_sweep(tmp_path / "r", seeds=range(3), n_samples=20, epochs=1, predictions=False)
    record = json.loads((root / "parity_gate.json").read_text())
    record.update(change)
    (root / "parity_gate.json").write_text(json.dumps(record))
    with pytest.raises(AnalysisError, match="parity_gate.json: equivalence-gate") as err:
        build_report([root], tmp_path / "out", {"n_resamples": 50})
    assert needle in str(err.value)
    assert not (tmp_path / "out" / "report.html").exists()


# ------------------------------------------------------------------------------------------- CLI errors

def _assert_refused(capsys, args, out, needle):
    rc = main([str(a) for a in args] + ["--out", str(out), "--n-resamples", "50"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("analysis: error:") and needle in err and len(err.splitlines()) == 1, err
    assert not (out / "report.html").exists() and not (out / "summary.parquet").exists()


def test_cli_no_such_directory(tmp_path, capsys):
    _assert_refused(capsys, [tmp_path / "nope"], tmp_path / "out", "no such results directory")


def test_cli_directory_without_parquet(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _assert_refused(capsys, [tmp_path / "empty"], tmp_path / "out", "no runs.parquet")


def test_cli_not_a_parquet_file(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.parquet").write_text("not parquet")
    _assert_refused(capsys, [tmp_path / "bad"], tmp_path / "out", "not a readable Parquet file")


def test_cli_unknown_schema_version(tmp_path, capsys):
    root = make_sweep(tmp_path / "s", seeds=[0])
    table = pq.read_table(root / "runs.parquet")
    meta = dict(table.schema.metadata)
    meta[b"kvp.schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), root / "runs.parquet")
    _assert_refused(capsys, [root], tmp_path / "out", "schema version '99'")


def test_cli_foreign_parquet_and_missing_columns(tmp_path, capsys):
    (tmp_path / "foreign").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign" / "runs.parquet")
    _assert_refused(capsys, [tmp_path / "foreign"], tmp_path / "out", "not a benchmark results table")
    root = make_sweep(tmp_path / "s", seeds=[0])
    table = pq.read_table(root / "runs.parquet")
    pq.write_table(table.drop_columns(["status"]), root / "runs.parquet")
    _assert_refused(capsys, [root], tmp_path / "out", "missing required column(s) ['status']")


def test_cli_only_failed_cells(tmp_path, capsys):
    root = make_sweep(tmp_path / "s", seeds=[0], failed=[("keras", 0), ("pytorch", 0)])
    _assert_refused(capsys, [root], root, "no successful cells")


def test_cli_exit_code_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"analysis: error: {tmp_path / 'missing'}: no such results directory"


def test_reads_unconsolidated_fragments(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0, 1])
    for name in rr.SCHEMAS:
        (root / f"{name}.parquet").unlink()
    from analysis.load import load_results

    res = load_results([root])
    assert len(res.ok_runs) == 4 and any("fragments" in n for n in res.notes)
    assert res.scores is not None and res.scores.shape == (len(res.predictions), 3)


# ------------------------------------------------------------------------------------------- figures

@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One condition (one batch size, one device), 3 seeds: the sweep a first run produces."""
    root = make_sweep(tmp_path_factory.mktemp("single"), seeds=range(3), speed={"keras": 1.0, "pytorch": 0.8})
    paths = build_report([root], tmp_path_factory.mktemp("single-out"), {"n_resamples": 100, "random_state": 0})
    return paths, paths["report"].read_text(encoding="utf-8")


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start: html.index("</section>", start)]


def _svg(html: str, alt: str) -> str:
    """The SVG source of the report's figure with this alt text."""
    import base64
    import re

    found = re.search(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="' + re.escape(alt), html)
    assert found, f"no figure {alt!r}"
    return base64.b64decode(found.group(1)).decode("utf-8")


def test_ratio_locator_gives_few_readable_ticks():
    from analysis.plots import RatioLocator

    locator = RatioLocator(max_ticks=7)
    for lo, hi in [(0.75, 1.35), (0.3, 4.0), (0.05, 20.0), (1.2, 1.6), (0.97, 1.04), (0.999, 1.001)]:
        ticks = locator.tick_values(lo, hi)
        assert 2 <= len(ticks) <= 8, (lo, hi, ticks)
        assert ((ticks >= lo) & (ticks <= hi)).all(), (lo, hi, ticks)
        assert len({f"{t:.10g}" for t in ticks}) == len(ticks)  # distinct labels
        if lo <= 1 <= hi:
            assert 1.0 in ticks
        if hi / lo > 1.6:  # log-spaced nice factors: no two closer than 1/7 of the axis
            assert np.diff(np.log(ticks)).min() >= np.log(hi / lo) / 7 - 1e-12, ticks
    # the crowded case of issue 13: candidates 0.8 … 1.25 used to all be labelled
    assert len(locator.tick_values(0.78, 1.3)) <= 6


def test_forest_plot_ratio_axis_is_readable(built):
    from analysis.plots import forest_figure, framework_style

    summary = pd.read_parquet(built[2]["summary"])
    pairs = summary[(summary["row_kind"] == "pair") & summary["metric"].isin(
        ["median_epoch_seconds", "images_per_second", "accuracy", "latency_p50_ms"])]
    fig = forest_figure(pairs, framework_style(["keras", "pytorch"]))
    try:
        ratio_ax = next(ax for ax in fig.axes if ax.get_xscale() == "log")
        fig.canvas.draw()
        lo, hi = ratio_ax.get_xlim()
        ticks = [t for t in ratio_ax.get_xticks() if lo <= t <= hi]
        labels = [t.get_text() for t in ratio_ax.get_xticklabels() if t.get_text()]
        assert 2 <= len(ticks) <= 8 and len(set(labels)) == len(labels), labels
        assert all(label.endswith("×") for label in labels)
        boxes = [t.get_window_extent() for t in ratio_ax.get_xticklabels() if t.get_text()]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), labels  # no label on top of another
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_learning_curve_bands_stay_inside_the_metric_range():
    import matplotlib.pyplot as plt

    from analysis.plots import framework_style, learning_curves, learning_curves_figure

    rows = []
    for seed, jitter in enumerate([-0.2, 0.0, 0.2]):  # a large spread next to the limits 0 and 1
        for epoch in range(4):
            rows.append({"cell_id": f"c{seed}", "framework": "keras", "seed": seed, "epoch": epoch,
                         "train_loss": max(0.0, 0.05 + jitter), "val_loss": max(0.0, 0.1 + jitter),
                         "train_accuracy": min(1.0, 0.9 + jitter), "val_accuracy": min(1.0, 0.95 + jitter)})
    fig = learning_curves_figure(pd.DataFrame(rows), framework_style(["keras"]))
    try:
        loss_ax, acc_ax = fig.axes
        for ax, (low, high) in ((loss_ax, (0.0, np.inf)), (acc_ax, (0.0, 1.0))):
            bands = [c for c in ax.collections if len(c.get_paths())]
            assert bands
            for band in bands:
                y = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
                assert y.min() >= low - 1e-12 and y.max() <= high + 1e-12, (ax.get_title(), y.min(), y.max())
            x = np.concatenate([line.get_xdata() for line in ax.get_lines()])
            assert x.min() == 1 and x.max() == 4  # epochs 0..3 in the table are shown as 1..4
    finally:
        plt.close(fig)
    one_epoch = pd.DataFrame(rows)
    assert learning_curves(one_epoch[one_epoch["epoch"] == 0], framework_style(["keras"])) is None


def _roc_inputs(separation: float) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frames, scores = [], []
    for fw in ("keras", "pytorch"):
        for seed in range(3):
            y = rng.integers(0, 2, 400)
            p1 = 1 / (1 + np.exp(-(separation * (2 * y - 1) + rng.normal(0, 1, y.size))))
            frames.append(pd.DataFrame({"cell_id": f"{fw}-{seed}", "framework": fw, "y_true": y}))
            scores.append(np.column_stack([1 - p1, p1]))
    preds = pd.concat(frames, ignore_index=True)
    return preds.assign(_row=np.arange(len(preds))), np.vstack(scores)


def test_roc_zooms_into_the_top_left_corner_only_when_curves_crowd_it():
    import matplotlib.pyplot as plt

    from analysis.plots import framework_style, roc_curves_figure

    style = framework_style(["keras", "pytorch"])
    crowded = roc_curves_figure(*_roc_inputs(separation=2.5), style)  # AUC ≈ 0.999
    spread = roc_curves_figure(*_roc_inputs(separation=0.7), style)  # AUC ≈ 0.85
    try:
        assert len(spread.axes) == 1
        assert len(crowded.axes) == 2
        zoom = crowded.axes[1]
        x_lo, x_hi = zoom.get_xlim()
        y_lo, y_hi = zoom.get_ylim()
        assert x_lo == 0 and 0.01 <= x_hi <= 0.2 and 0.5 <= y_lo < 1 and y_hi == 1
        assert "top-left corner" in zoom.get_title()
    finally:
        plt.close(crowded), plt.close(spread)


def test_speed_figure_needs_an_axis_that_varies(built, single):
    from analysis.plots import speed_axis

    multi_html, single_html = built[3], single[1]
    assert "Every run used one training batch size (64) and one device (cpu Test CPU)" in _section(single_html, "scaling")
    assert 'alt="Speed by batch size' not in single_html  # no single-dot panels
    speed = _svg(multi_html, "Speed by batch size")
    assert "training batch size" in speed and "Epoch time [s]" in speed
    rows = pd.DataFrame({"metric": "median_epoch_seconds", "batch_size": [64, 64], "device_label": ["cpu", "cuda A"]})
    assert speed_axis(rows) == "device_label"
    assert speed_axis(rows.assign(batch_size=[32, 64])) == "batch_size"
    assert speed_axis(rows.assign(device_label="cpu")) is None

    import matplotlib.pyplot as plt

    from analysis.plots import framework_style, scaling_figure

    by_device = pd.DataFrame([{"metric": m, "framework": fw, "device_label": dev, "device_kind": dev.split()[0],
                               "device_name": dev, "batch_size": 64, "estimate": 1.0, "ci_low": 0.9, "ci_high": 1.1}
                              for m in ("median_epoch_seconds", "latency_p50_ms") for fw in ("keras", "pytorch")
                              for dev in ("cpu", "cuda H100")])
    fig = scaling_figure(by_device, framework_style(["keras", "pytorch"]))
    try:  # one batch size, two devices: devices on the x axis, one line per framework joining them
        assert [ax.get_xlabel() for ax in fig.axes] == ["device", "device"]
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cpu", "cuda H100"]
        assert len(fig.axes[0].get_lines()) >= 2
    finally:
        plt.close(fig)


def test_paired_seed_figure_joins_each_seed(built, single):
    svg = _svg(single[1], "Per-seed paired values")
    assert "pytorch faster on 3 of 3 seeds" in svg  # the planted 0.8× epoch time, seed by seed
    assert "Epoch time [s]" in svg and "Accuracy [%]" in svg
    multi = _svg(built[3], "Per-seed paired values")
    assert "batch 32" in multi and "batch 64" in multi  # one column per condition


def test_units_and_counts_in_the_report(built, single):
    html = built[3]
    assert "Peak host memory (RSS)" in html and "MiB" in _section(html, "metrics")
    assert "MiB" in _svg(html, "Peak memory") and ">MB<" not in _svg(html, "Peak memory")
    assert "Epochs 1..N" in html
    for text in (html, single[1]):
        assert "across all 0 " not in text and " 0 paired comparison" not in text


def test_no_sentence_counts_zero_things(tmp_path):
    root = make_sweep(tmp_path / "s", seeds=[0], epochs=1)  # one seed: no test has a p-value
    html = build_report([root], tmp_path / "out", {"n_resamples": 50})["report"].read_text(encoding="utf-8")
    assert "across all 0" not in html and " 0 paired comparison" not in html
    assert "none has a p-value here" in html
    assert "One epoch per run" in html  # a one-point learning curve is replaced by a sentence


# ------------------------------------------------------------------------------------------- browser

SCREEN = (1280, 900)


def _chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}"]
    return subprocess.run(flags + args, capture_output=True, text=True, timeout=120)


def _screenshot(url: str, png, size: tuple[int, int], profile) -> np.ndarray:
    from PIL import Image

    done = _chromium([f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", url], profile)
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB"), dtype=int)


def _share_near(pixels: np.ndarray, hex_colour: str, tol: int = 40) -> float:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return float((np.abs(pixels - rgb).max(axis=2) <= tol).mean())


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
@pytest.mark.parametrize("sweep", ["single", "multi"])
def test_report_screenshots_in_headless_chromium(sweep, built, single, tmp_path):
    """The report as a browser shows it, for a one-condition and a 2-batch-size sweep: the DOM has the
    sections and figures, the first screen is the verdict, the figures are drawn (framework colours
    on screen). Set KVP_SCREENSHOT_DIR to keep the PNGs."""
    import os

    report = (single[0] if sweep == "single" else built[2])["report"]
    profile = tmp_path / "profile"
    dom = _chromium(["--dump-dom", report.as_uri()], profile)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for needle in ('id="verdict-table"', "keras vs pytorch", 'alt="Forest plot', 'alt="Per-seed paired values',
                   'alt="Learning curves', 'alt="ROC curves', 'alt="Peak memory'):
        assert needle in dom.stdout, needle
    assert ('alt="Speed by batch size' in dom.stdout) == (sweep == "multi")
    if sweep == "multi":
        assert "&lt;script&gt;" in dom.stdout  # the planted model name is still text after parsing

    keep = os.environ.get("KVP_SCREENSHOT_DIR")
    out = Path(keep) if keep else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    first = _screenshot(report.as_uri(), out / f"{sweep}-first-screen.png", SCREEN, profile)
    assert first.shape == (SCREEN[1], SCREEN[0], 3)
    grey = first.mean(axis=2)
    assert grey.std() > 10 and (grey < 128).mean() > 0.005  # text and table rules, not a blank page
    assert _share_near(first, "#fff3c4", 8) > 0.001 or _share_near(first, "#dbe9f6", 8) > 0.001  # verdict tags

    html = report.read_text(encoding="utf-8")
    for section, tall in (("forest", 1600), ("paired", 900)):
        # The section alone, with the report's own style sheet: headless Chromium's screenshot of a
        # scrolled page (report.html#forest) is not reliable.
        page = tmp_path / f"{section}.html"
        page.write_text(html[: html.index("<body>")] + "<body>" + _section(html, section) + "</section></body></html>",
                        encoding="utf-8")
        shot = _screenshot(page.as_uri(), out / f"{sweep}-{section}.png", (SCREEN[0], tall), profile)
        assert shot.shape == (tall, SCREEN[0], 3)
        assert (shot.mean(axis=2) < 128).mean() > 0.003, section  # drawn, not an empty box
        if section == "paired":  # seed lines take the winner's colour: pytorch is faster on every seed
            assert _share_near(shot, "#D55E00") > 0.0003, section
        else:  # the equivalence margin: a wide light-grey band
            assert _share_near(shot, "#e6e6e6", 6) > 0.005, section


def test_summary_is_plain_parquet(built):
    frame = pd.read_parquet(built[2]["summary"])
    pair = frame[(frame["row_kind"] == "pair") & (frame["metric"] == "median_epoch_seconds")]
    assert len(pair) == 2 and (pair["estimate"] > 1.3).all()
    assert json.loads(json.dumps(frame["verdict"].dropna().tolist()))


def test_left_out_figures_say_why():
    from analysis.report import figure_notes

    fw_rows = pd.DataFrame({"metric": "median_epoch_seconds", "batch_size": [64], "device_label": ["cpu Test CPU"]})
    conditions = pd.DataFrame({"condition_id": [0], "condition": ["all runs"]})
    alone = figure_notes(fw_rows, conditions, ["keras"])
    assert alone["forest"] == "Only keras ran: there is no paired comparison to plot."
    assert alone["paired"].startswith("Only keras ran")
    assert alone["scaling"].startswith("Every run used one training batch size (64) and one device (cpu Test CPU)")
    both = figure_notes(fw_rows.assign(batch_size=[32]).pipe(lambda f: pd.concat([f, fw_rows])), conditions,
                         ["keras", "pytorch"])
    assert both == {"scaling": "", "paired": "", "forest": ""}  # nothing left out, nothing to explain


# ---- the Deploys section (deployments.parquet; analysis/deploy.py) ---------------------------------------
@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = make_sweep(tmp_path_factory.mktemp("deployed"), seeds=range(4), deploy={"keras": 1.0, "pytorch": 2.0})
    out = tmp_path_factory.mktemp("deployed-out")
    paths = build_report([root], out, {"n_resamples": 200})
    html = paths["report"].read_text(encoding="utf-8")
    return pd.read_parquet(paths["summary"]), html[html.index('<section id="deploys">'):html.index("</section>",
                                                                                                    html.index('<section id="deploys">'))], html


def test_deploys_pair_the_frameworks_per_format_and_runtime_with_intervals(deployed):
    summary, section, _ = deployed
    dep = summary[summary["deployment"].notna()]
    assert set(dep["deployment"]) == {"onnx · onnxruntime", "litert · litert", "tf_saved_model · tensorflow",
                                      "torch_export · torch", "native"}
    assert summary[summary["deployment"].isna()]["metric"].isin(["accuracy", "median_epoch_seconds"]).any()
    onnx = dep[(dep["deployment"] == "onnx · onnxruntime") & (dep["row_kind"] == "pair")
               & (dep["metric"] == "served_latency_p50_ms")].iloc[0]
    assert (onnx["framework_a"], onnx["framework_b"], onnx["n"]) == ("keras", "pytorch", 4)
    assert 0.4 < onnx["estimate"] < 0.6 and onnx["ci_low"] < onnx["estimate"] < onnx["ci_high"]  # planted 1 / 2
    assert onnx["family"] == "secondary" and onnx["phrase"].startswith("keras ") and "faster" in onnx["phrase"]
    native = dep[(dep["deployment"] == "native") & (dep["row_kind"] == "pair")]
    assert len(native) and set(native["framework_a"]) == {"keras"}  # SavedModel vs ExportedProgram, paired by seed
    assert (dep["condition"] == "all runs").all() and (dep["condition_id"] == 0).all()  # the report's conditions
    for needle in ("ONNX served by ONNX Runtime", "Each framework in its own serving format", "keras vs pytorch",
                   "litert-torch", "failed 1/4", "ok 3/4", "max |Δ probability| 0.3", "parity.cpu_threads",
                   "intra_op_num_threads", "Modules loaded in the serving processes"):
        assert needle in section, needle


def test_the_common_runtime_row_sits_next_to_infers_faster_with_what_it_means(deployed):
    _, section, html = deployed
    common = section[section.index('id="deploy-common"'):]
    assert "In-framework latency p50 (Infers faster)" in common and "Served from ONNX Runtime" in common
    verdict = html[html.index('id="verdict"'):html.index("<nav>")]
    assert "Infers faster, served from one runtime" in verdict and "ONNX Runtime 0." in verdict


def test_what_the_common_runtime_difference_means():
    from analysis.deploy import meaning

    def pair(estimate, low, high, phrase="", n=5):
        return pd.Series({"framework_a": "keras", "framework_b": "pytorch", "estimate": estimate, "ci_low": low,
                          "ci_high": high, "n": n, "phrase": phrase})

    slower = pair(1.2, 1.1, 1.3, "pytorch 1.20× faster")
    assert "runtime and Python overhead" in meaning(slower, pair(1.0, 0.9, 1.1))
    assert "persists" in meaning(slower, pair(1.3, 1.2, 1.4, "pytorch 1.30× faster"))
    assert "reverses" in meaning(slower, pair(0.8, 0.7, 0.9, "keras 1.25× faster"))
    assert "exported graphs differ" in meaning(pair(1.0, 0.9, 1.1), pair(0.8, 0.7, 0.9, "keras 1.25× faster"))
    assert "equally fast" in meaning(pair(1.0, 0.9, 1.1), pair(1.0, 0.95, 1.05))
    assert "One paired seed" in meaning(slower, pair(1.0, float("nan"), float("nan"), n=1))


def test_a_sweep_without_deployments_says_how_to_get_them(built):
    html = built[3]
    section = html[html.index('<section id="deploys">'):]
    assert "deploy=onnx" in section[:2000] and "not available" not in section[:200]
    summary = pd.read_parquet(built[2]["summary"])
    assert summary["deployment"].isna().all()


def test_the_developer_experience_ecosystem_row_shows_what_deployed(deployed):
    html = deployed[2]
    dx = html[html.index('id="dx"'):html.index("</section>", html.index('id="dx"'))]
    assert "deployed: tf_saved_model ok 4/4 (served p50" in dx and "litert failed" not in dx
    assert "deployed: torch_export ok 4/4" in dx and "litert skipped" in dx

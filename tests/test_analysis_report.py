"""The report: renders from a synthetic sweep, escapes everything, needs no network, opens in Chromium;
the CLI refuses bad input with one clear message and writes nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import build_report
from analysis.__main__ import main
from analysis.loc import count_file, count_regions
from analysis.report import gate_view
from analysis.summary import SUMMARY_COLUMNS
from analysis_support import make_sweep
from runner import results as rr

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
                   'alt="Forest plot', 'alt="Scaling by batch size', 'alt="Peak memory'):
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


def test_gate_view_reads_many_shapes():
    assert gate_view(None, "not run", "d")["status"] == "not run"
    v = gate_view({"status": "fail", "param_counts": {"pytorch": 10, "keras": 10},
                   "comparisons": {"keras vs pytorch": {"max_abs": 0.5, "atol": 1e-4, "ok": False}},
                   "notes": "outputs differ"}, "x.json", "d")
    assert v["status"] == "FAILED"
    assert [p["framework"] for p in v["params"]] == ["keras", "pytorch"]
    assert v["pairs"][0]["pair"] == "keras vs pytorch" and v["pairs"][0]["status"] == "FAILED"
    assert v["notes"] == ["outputs differ"]
    err = gate_view({"model": "m", "data": "d", "status": "error", "errors": {"keras": "no running actor"}}, "x", "d")
    assert err["status"] == "ERROR" and err["notes"] == ["keras: no running actor"]
    odd = gate_view(["something", 1], "x.json", "d")
    assert odd["status"].startswith("unknown shape") and '"something"' in odd["raw"]


def test_gate_records_skipped_and_not_run(tmp_path):
    from analysis.load import SweepDir
    from analysis.report import _gate_views

    skipped = {"status": "skipped", "summary": "fewer than two real frameworks (['fake'])", "checks": []}
    views = _gate_views([SweepDir(tmp_path, {}, skipped, "parity_gate.json"),
                         SweepDir(tmp_path, {}, {"status": "not run"}, "metadata"),
                         SweepDir(tmp_path, {}, None, "not run")])
    assert [v["status"] for v in views] == ["skipped", "not run", "not run"]
    assert views[0]["notes"] == ["fewer than two real frameworks (['fake'])"]


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


# ------------------------------------------------------------------------------------------- browser

@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian package `chromium`)")
def test_report_opens_in_headless_chromium(built, tmp_path):
    report = built[2]["report"]
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="verdict-table"' in dom.stdout and "keras vs pytorch" in dom.stdout
    assert "&lt;script&gt;" in dom.stdout  # still text after parsing
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1280,900", f"--screenshot={shot}", report.as_uri()], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and table rules, not a blank page


def test_summary_is_plain_parquet(built):
    frame = pd.read_parquet(built[2]["summary"])
    pair = frame[(frame["row_kind"] == "pair") & (frame["metric"] == "median_epoch_seconds")]
    assert len(pair) == 2 and (pair["estimate"] > 1.3).all()
    assert json.loads(json.dumps(frame["verdict"].dropna().tolist()))

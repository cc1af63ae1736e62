"""The report's first screen in the terminal: the headline verdicts of ``summary.parquet`` as a rich table.

The rows are exactly the report's verdict table (``analysis.report.verdict_sections`` over the
summary the analysis wrote): question, metric, A vs B, estimate [95 % CI], verdict — one block per
condition. Nothing is computed here.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def verdict_rows(summary: pd.DataFrame) -> list[dict]:
    """The report's verdict sections (one per condition, each with its headline rows)."""
    from analysis.report import verdict_sections

    if summary.empty or "condition_id" not in summary:
        return []
    conditions = (summary[["condition_id", "condition"]].dropna(subset=["condition_id"])
                  .drop_duplicates("condition_id").sort_values("condition_id"))
    return verdict_sections(summary, conditions, {})


def print_verdict(summary_path: Path, file=None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = file or sys.stdout
    # On a terminal: its width less one column (a full-width line can wrap in some terminals); piped: 120.
    width = max(shutil.get_terminal_size((120, 24)).columns - 1, 79) if out.isatty() else 120
    console = Console(file=out, width=width, highlight=False, soft_wrap=False)
    summary = pq.read_table(summary_path).to_pandas()
    sections = [s for s in verdict_rows(summary) if s["rows"]]
    if not sections:
        frameworks = sorted(summary.loc[summary.get("row_kind") == "framework", "framework"].dropna().unique()) \
            if "row_kind" in summary else []
        console.print(f"verdict: no paired comparison (frameworks: {', '.join(frameworks) or 'none'}); "
                      "the per-framework values are in the report")
        return
    for section in sections:
        table = Table(title=f"verdict — {section['label']}" if len(sections) > 1 else "verdict",
                      title_justify="left", show_lines=False, pad_edge=False)
        table.add_column("question")
        table.add_column("metric")
        table.add_column("A vs B")
        table.add_column("estimate [95 % CI]")
        table.add_column("verdict")
        for r in section["rows"]:
            estimate = r["estimate"].split(" = ", 1)[-1]
            style = {"v-a": "bold", "v-b": "bold", "v-eq": "", "v-inc": "dim", "v-nm": "dim"}.get(r["vclass"], "")
            verdict = Text(r["verdict"], style=style)
            if r.get("basis"):
                verdict.append(f"\n{r['basis']}", style="dim")
            table.add_row(r["question"], r["metric"], r["pair"], f"{estimate} {r['ci']}".strip(), verdict)
        console.print(table)
    if len(sections) == 1:
        console.print(Text(f"condition: {sections[0]['label']}", style="dim"))
    _print_notebook(console, summary)


def _print_notebook(console, summary: pd.DataFrame) -> None:
    """The seed notebook's table, measured (``analysis.trained.notebook_table``), under the verdicts."""
    from rich.table import Table
    from rich.text import Text

    from analysis.report import verdict_text
    from analysis.trained import notebook_table

    conditions = (summary[["condition_id", "condition", "epochs"]].dropna(subset=["condition_id"])
                  .drop_duplicates("condition_id").sort_values("condition_id"))
    for block in notebook_table(summary, conditions, verdict_text):
        title = f"the trained model — {block['label']}" + (f" · {block['epochs']} epochs" if block["epochs"] else "")
        table = Table(title=title, title_justify="left", pad_edge=False)
        table.add_column("framework")
        for heading in block["headings"]:
            table.add_column(heading)
        for row in block["rows"]:
            table.add_row(row["framework"], *[f"{c['value']} {c['ci']}".strip() for c in row["cells"]])
        console.print(table)
        for a in block["accuracy"]:
            console.print(Text(f"test accuracy {a['pair']} = {a['estimate']} {a['ci']}: {a['verdict']}"))


def print_history(history_path: Path, file=None) -> None:
    """The history's regression table (``analysis.history``): every step of every arm, condition and
    headline metric — old → new, the ratio or difference with its interval, the verdict — flagged first."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from analysis.history import step_rows

    out = file or sys.stdout
    width = max(shutil.get_terminal_size((120, 24)).columns - 1, 79) if out.isatty() else 160
    console = Console(file=out, width=width, highlight=False, soft_wrap=False)
    frame = pq.read_table(history_path).to_pandas()
    steps = frame[frame["row_kind"] == "step"]
    if steps.empty:
        console.print("history: no arm ran in two sweeps with seeds in common; nothing to compare over time")
        return
    rows = sorted(step_rows(steps), key=lambda r: not r["flag"])
    sweeps = frame.loc[frame["row_kind"] == "value", ["step", "results_dir"]].drop_duplicates("step").sort_values("step")
    console.print(f"history — {len(sweeps)} sweeps of one grid, in time order:")
    for s in sweeps.itertuples():
        console.print(f"  {int(s.step)}: {s.results_dir}", soft_wrap=True)
    table = Table(title=f"history: {sum(r['flag'] for r in rows)} of {len(rows)} steps flagged by the paired test",
                  title_justify="left", pad_edge=False)
    for column in ("arm", "condition", "metric", "steps", "old → new", "new/old or new − old [95 % CI]", "verdict",
                   "what changed"):
        table.add_column(column)
    for r in rows:
        style = {"v-bad": "bold red", "v-a": "bold", "v-eq": "", "v-inc": "dim"}.get(r["vclass"], "")
        table.add_row(r["series"], r["condition"], r["metric"], r["steps"], r["old_new"], f"{r['estimate']} {r['ci']}",
                      Text(r["verdict"], style=style), r["changed"])
    console.print(table)

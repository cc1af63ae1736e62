"""``python -m analysis <results dir> [<more dirs>…] [--out DIR]``: summary.parquet + report.html (+ history.parquet
when the directories are sweeps of one grid taken at different times: ``analysis.history``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.options import AnalysisError, default_options


def main(argv: list[str] | None = None) -> int:
    defaults = default_options()
    parser = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Paired statistics and a self-contained HTML report from one or more sweep results directories.")
    parser.add_argument("results", nargs="*", type=Path, help="sweep results directories (runs.parquet, …)")
    parser.add_argument("--describe", action="store_true",
                        help="print the data dictionary (every column of the Parquet tables: type, unit, meaning) and exit")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the first results directory)")
    parser.add_argument("--confidence", type=float, default=defaults.confidence)
    parser.add_argument("--n-resamples", type=int, default=defaults.n_resamples, help="bootstrap resamples")
    parser.add_argument("--random-state", type=int, default=defaults.random_state)
    parser.add_argument("--margin-quality-pp", type=float, default=defaults.margin_quality_pp,
                        help="equivalence margin for quality metrics, ± percentage points")
    parser.add_argument("--margin-time-ratio", type=float, default=defaults.margin_time_ratio,
                        help="equivalence margin for time/memory ratios (0.05 = ±5 %%)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha)
    args = parser.parse_args(argv)
    if args.describe:
        print(_data_dictionary(), end="")
        return 0
    if not args.results:
        parser.error("give at least one results directory (or --describe)")
    options = {"confidence": args.confidence, "n_resamples": args.n_resamples, "random_state": args.random_state,
               "margin_quality_pp": args.margin_quality_pp, "margin_time_ratio": args.margin_time_ratio,
               "alpha": args.alpha}
    try:
        from analysis import build_report

        paths = build_report(args.results, args.out or args.results[0], options)
    except AnalysisError as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        return 2
    from analysis import print_history, print_verdict

    print_verdict(paths["summary"])
    if "history" in paths:  # several sweeps of one grid: each arm over time, the flagged steps
        print_history(paths["history"])
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _data_dictionary() -> str:
    from core.results import data_dictionary
    from analysis.columns import SUMMARY_DOCS

    text = data_dictionary()
    width = max(map(len, SUMMARY_DOCS))
    lines = ["", "summary.parquet (one row per metric × condition × framework or pair; "
             "each row's numbers are in its `unit`, on its `scale`)"]
    lines += [f"  {name:<{width}}  {unit:<9} {desc}" for name, (unit, desc) in SUMMARY_DOCS.items()]
    from analysis.history import HISTORY_DOCS

    lines += ["", "history.parquet (python -m analysis over several sweeps of one grid: one row per sweep or step × arm "
              "as asked × condition × headline metric)"]
    lines += [f"  {name:<{width}}  {unit:<9} {desc}" for name, (unit, desc) in HISTORY_DOCS.items()]
    return text + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

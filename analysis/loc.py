"""Lines of code per marked region of an adapter — the measured side of the developer-experience table.

Convention (in ``frameworks/*_adapter.py``)::

    # region: model-definition        (also: training-loop, data-pipeline)
    ...code...
    # endregion

Counted: non-blank lines that are not comments and not docstrings, between the markers (markers
excluded); several regions of one name add up. A region that is missing or never closed is "n/a".
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

REGIONS: tuple[str, ...] = ("model-definition", "training-loop", "data-pipeline")

_START = re.compile(r"^\s*#\s*region:\s*([A-Za-z0-9_-]+)\s*$")
_END = re.compile(r"^\s*#\s*endregion\b")


def _non_code_lines(source: str) -> set[int]:
    """1-based line numbers holding only comments, docstrings or nothing."""
    lines = source.splitlines()
    code: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
                continue
            code.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        # A file being edited may not tokenize; fall back to "not blank and not starting with #".
        code = {i for i, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")}
    try:
        for node in ast.walk(ast.parse(source)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
                code.difference_update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    except SyntaxError:
        pass
    return set(range(1, len(lines) + 1)) - code


def count_regions(path: str | Path) -> dict[str, int | None]:
    """{region: lines of code or None when the region is missing/unterminated (or the file is absent)}."""
    path = Path(path)
    if not path.is_file():
        return {name: None for name in REGIONS}
    source = path.read_text(encoding="utf-8", errors="replace")
    skip = _non_code_lines(source)
    counts: dict[str, int] = {}
    open_name: str | None = None
    broken: set[str] = set()
    for number, line in enumerate(source.splitlines(), 1):
        start = _START.match(line)
        if start:
            if open_name is not None:  # nested or unterminated: this count cannot be trusted
                broken.add(open_name)
            open_name = start.group(1)
            counts.setdefault(open_name, 0)
            continue
        if _END.match(line):
            open_name = None
            continue
        if open_name is not None and number not in skip:
            counts[open_name] += 1
    if open_name is not None:
        broken.add(open_name)
    return {name: (None if name in broken or name not in counts else counts[name]) for name in REGIONS}


def count_file(path: str | Path) -> int | None:
    """Lines of code of a whole file (same rule), None when absent."""
    path = Path(path)
    if not path.is_file():
        return None
    source = path.read_text(encoding="utf-8", errors="replace")
    return len(source.splitlines()) - len(_non_code_lines(source))

"""The console: what a person at the terminal sees, and where everything else goes.

Owns the quiet-by-default policy (framework and Ray output to ``<out>/logs/``, ``logs``), the short
console lines of a sweep (``lines``: time of day, what happened, the cell in words; the full logging
format stays in ``sweep.log``) and the live progress with its ETA (``progress``).

May import: ``core`` and ``runner.errors`` only (every other part of the runner may import it).
"""

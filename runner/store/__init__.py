"""The store: a sweep's result files on disk, written so that nothing is ever half-written.

Owns the atomic per-cell fragments and their consolidation into ``runs``/``epochs``/``predictions``
(``fragments``; the schemas are ``core.results``) and the sweep's own I/O failures as one line naming
the path and the cause (``io_errors``).

May import: ``core`` and ``runner.errors`` only.
"""

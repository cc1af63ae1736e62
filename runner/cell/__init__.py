"""The cell: what runs inside one actor process (or ``python -m runner.cell``) for one grid point.

Owns a cell's identity and stable id (``identity``), the cell end to end — data, build, timed
training, test metrics, latency, memory, rows (``run``) —, the ONE quality-metrics function
(``metrics``), where and with what it ran (``provenance``), and the one-cell CLI (``__main__``).

May import: ``core``, ``frameworks`` (inside functions: the adapter is loaded only where a cell runs),
``runner.data``, ``runner.errors`` and (the CLI) ``runner.store``.
"""

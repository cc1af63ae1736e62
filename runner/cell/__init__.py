"""The cell: what runs inside one actor process (or ``python -m runner.cell``) for one grid point.

Owns a cell's identity and stable id (``identity``), the cell end to end — data, the device's measured
choices, build, timed training to the target or the budget, test metrics, latency, throughput, rows
(``run``) —, the ONE quality-metrics function (``metrics``), the layout choices measured on the device
(``tuning``), per-cell memory from one starting state (``memory``) and in a fresh process (``probe``),
energy counters (``energy``), where and with what it ran (``provenance``), and the one-cell CLI
(``__main__``).

May import: ``core``, ``frameworks`` (inside functions: the adapter is loaded only where a cell runs),
``runner.data``, ``runner.errors`` and (the CLI) ``runner.store``.
"""

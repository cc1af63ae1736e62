"""Planning: from a composed config to the validated list of cells, before Ray starts.

Owns the grid (axes → cells, device words, the seeded framework-interleaved order: ``grid``) and every
input check that needs no cluster (schemas, options of each axis, model × image size, the data
prepared on the driver, batch size versus the training split: ``checks``). Raises ``GridError``.

May import: ``core``, ``runner.errors``, ``runner.cell`` (a cell's identity) and ``runner.data``.
"""

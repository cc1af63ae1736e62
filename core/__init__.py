"""The ground floor: what every other package stands on, importing nothing of this project.

Layers import one way only (``tests/test_layers.py`` enforces it)::

    core        ← imports nothing of ours (numpy, pyarrow, omegaconf only)
    frameworks  ← core
    runner      ← frameworks, core  (and ``analysis``' public ``build_report``)
    analysis    ← core              (it reads Parquet, never the runner)

What lives here: model specs (``spec``), seeded random streams (``seeding``), the epoch plan and
the one numpy augmentation reference (``batches``), the result tables' schemas and on-disk layout
(``results``), the equivalence-gate record (``gate``), atomic file writes (``atomic``), one-line
error text (``text``) and the project's paths (``paths``).
"""

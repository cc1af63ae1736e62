"""The sweep's life: open (or resume) it, run the gate, dispatch cells, stop on a signal, finish.

Owns ``run_sweep`` (``run``: the steps in order), the manifest and resume (``manifest``), the
equivalence gate over the actors (``gate``), the queue, retries and pairs pinned to one device
(``dispatch``), adaptive seeds (``adaptive``), the one stop path for SIGINT/SIGTERM/SIGHUP
(``stopping``) and the closing lines and exit codes (``outcome``).

May import: everything below it in ``runner`` (``planning``, ``cell``, ``cluster``, ``store``,
``console``, ``data``, ``errors``), ``core``, and the analysis' public package API (``import analysis``).
"""

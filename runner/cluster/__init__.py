"""The cluster: Ray for one sweep — started or joined, its nodes as slots, the actors, their faults.

Owns starting a local head or joining ``runner.address`` and shutting down what we started
(``session``, ``local_head``), turning nodes into placement-group slots (``slots``), the long-lived
framework actors and the driver's record of them — start, probe, restart, joined and lost nodes
(``actors``) —, and native crash dumps of an actor (``crashes``). "What happens when a node dies"
starts here (``actors.ActorPool.node_lost``) and continues in ``runner.sweep.dispatch``.

May import: ``core``, ``frameworks`` (inside the actor), ``runner.errors``, ``runner.planning``,
``runner.cell`` and ``runner.console``.
"""

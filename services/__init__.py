"""Everything of slatrack that touches the outside world, in layers.

Each package may import the ones listed below it, never one above
(tests/unit/test_architecture.py checks every arrow):

- ``cli``: the ``slatrack`` command and the text it prints (``cli.render``).
- ``serve``: ``slatrack serve``, the process: broker, worker, outbox, HTTP server.
- ``api``: the HTTP API (intake, queries, admin, auth, errors).
- ``dev``: the simulated helpdesk and ``slatrack demo``.
- ``bootstrap``: wires a typed set of services from the settings.
- ``kafka`` and ``store``: the adapters (broker clients, embedded broker; SQLite and
  PostgreSQL read models). They implement the worker's ports and know nothing of each other.
- ``worker``: the projection runner over the pure core (``projections``): batches,
  offsets and generations, timers, rows, histories, rebuild, outbox. It defines the
  ports it needs (``worker.ports``) and imports no driver, broker client or web framework.
- ``config``, ``logs``, ``metrics``: settings, logging and Prometheus metrics, for all.
"""

"""The projection runner: folds batches of events into the read models with the pure core.

It defines what it needs from the outside (``ports``: the read-model store, batches,
dead letters, signal sending, the log) and imports no broker client, driver or web
framework: ``services.kafka`` and ``services.store`` implement its ports.
"""

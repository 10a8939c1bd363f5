"""The training worker: the one worker kind that needs torch (through
:mod:`hamnet.training_run`, the model package's training loop; this package itself only wires
stages). It lives in ``trainer/``, outside ``worker/``, so that only the train image holds it.

``hamnet worker --queues train`` loads :mod:`hamnet_trainer.tasks` (by name, from
:func:`hamnet_worker.celery_app.get_app`), which trains HAM-Net on a labelled dataset
(:mod:`hamnet_trainer.pipeline`) and publishes the bundle to the model registry. The gateway
and the inference worker never import this package (import-linter contract).
"""

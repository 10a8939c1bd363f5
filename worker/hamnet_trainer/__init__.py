"""The training worker: the one worker kind that imports torch.

``hamnet worker --queues train`` loads :mod:`hamnet_trainer.tasks` (by name, from
:func:`hamnet_worker.celery_app.get_app`), which trains HAM-Net on a labelled dataset
(:mod:`hamnet_trainer.pipeline`) and publishes the bundle to the model registry. The gateway
and the inference worker never import this package (import-linter contract).
"""

"""Celery worker of the hamnet service: runs HAM-Net on uploaded videos.

Only ``celery`` and ``redis`` are imported at module level anywhere in this package, so the
gateway can import :mod:`hamnet_worker.jobs` (the job store) and
:mod:`hamnet_worker.celery_app` (to send tasks) without pulling in ONNX Runtime or PyAV.
"""

TASK_NAME = "hamnet.process_job"

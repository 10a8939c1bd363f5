"""Celery worker of the hamnet service: runs HAM-Net on uploaded videos.

It shares only the job contract (:mod:`hamnet_jobs`) with the gateway; the heavy imports
(ONNX Runtime, PyAV, OpenCV) happen inside the task, in the worker child.
"""

from hamnet_jobs import TASK_NAME

__all__ = ["TASK_NAME"]

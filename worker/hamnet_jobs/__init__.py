"""The job contract shared by the gateway (``hamnet_service``) and the workers
(``hamnet_worker``): neither side imports the other, both import this package.

Only pydantic, pydantic-settings and redis are imported here (never Celery, FastAPI, ONNX
Runtime, PyAV or torch), so the gateway image needs nothing of the worker's.
"""

TASK_NAME = "hamnet.process_job"

"""HTTP gateway of the hamnet service (FastAPI).

Accepts uploads, stores jobs in Redis and enqueues them for the Celery workers; never imports
torch or ONNX Runtime (PyAV only, to probe uploads), so it starts in a second and stays small.
"""

"""The ``train`` queue's task: wires the stages of :mod:`hamnet_trainer.pipeline`."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown
from hamnet_jobs.trainings import TRAIN_TASK

from hamnet_trainer.runtime import get_runtime

log = logging.getLogger("hamnet.trainer")


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    rt = get_runtime()
    rt.start_heartbeat()
    rt.beat()


@worker_process_shutdown.connect
def _child_stopping(**_: Any) -> None:
    get_runtime().stop()


@shared_task(name=TRAIN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def train_model(self: Any, training_id: str) -> str:
    from hamnet_trainer.pipeline import run_training

    return run_training(get_runtime(), training_id)

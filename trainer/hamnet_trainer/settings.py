"""Training worker settings: the worker's (``HAMNET_*``) plus the trainer's own."""

from __future__ import annotations

import os
from functools import lru_cache

from hamnet_worker.settings import WorkerSettings
from pydantic import Field


class TrainerSettings(WorkerSettings):
    train_threads: int = Field(default=0, ge=0, description="torch threads of a training; "
                               "0: the cores this process may use")

    @property
    def threads(self) -> int:
        if self.train_threads:
            return self.train_threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    return TrainerSettings()

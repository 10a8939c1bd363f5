"""``hamnet worker``: start a Celery worker consuming the ``gpu`` queue.

Registered through the ``hamnet.commands`` entry point, so ``hamnet`` never imports Celery
itself. Command-line flags override the ``HAMNET_*`` environment for this process.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a Celery worker that processes uploaded videos",
        description=(
            "Run a Celery worker (Redis broker at HAMNET_REDIS_URL) that runs the model bundle "
            "HAMNET_BUNDLE on uploaded videos. The model is loaded once in each child process."
        ),
    )
    p.add_argument("--concurrency", "-c", type=int, default=None,
                   help="child processes (default HAMNET_CONCURRENCY or 1: one model per child)")
    p.add_argument("--queues", "-Q", default=None,
                   help="queue to consume (default: gpu); `train`: be the training worker "
                   "(hamnet_trainer: trains models on uploaded datasets, the one worker kind "
                   "that imports torch)")
    p.add_argument(
        "--pool", default="prefork",
        help="only 'prefork' is supported: one job per child process is what the job leases, "
        "the heartbeat bookkeeping and Celery's hard time limit rely on ('solo' runs no time "
        "limit, 'threads' runs several jobs in one process)",
    )
    p.add_argument(
        "--streams", choices=("off", "also", "only"), default=None,
        help="live streams (docs/STREAMS.md): 'only' consumes the streams queue alone (each "
        "child is one stream slot, busy for as long as its stream plays), 'also' consumes it "
        "besides the job queue; default HAMNET_WORKER_STREAMS or off")
    p.add_argument("--loglevel", "-l", default="INFO")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides HAMNET_BUNDLE)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.pool != "prefork":
        print(f"hamnet worker: --pool {args.pool} is not supported: use prefork (the default) "
              "and --concurrency for several jobs at once", file=sys.stderr)
        return 2
    if args.bundle:
        os.environ["HAMNET_BUNDLE"] = args.bundle
    if args.queues:
        os.environ["HAMNET_QUEUE"] = args.queues
    if args.concurrency:
        os.environ["HAMNET_CONCURRENCY"] = str(args.concurrency)
    from hamnet_jobs.storage import make_storage

    from hamnet_worker.celery_app import get_app
    from hamnet_worker.settings import get_settings

    if args.streams:
        os.environ["HAMNET_WORKER_STREAMS"] = args.streams  # read by the children too
    streams = os.environ.get("HAMNET_WORKER_STREAMS", "off")
    s = get_settings()
    make_storage(s).ensure()
    app = get_app()
    consume = {"off": s.queue, "also": f"{s.queue},{s.stream_queue}",
               "only": s.stream_queue}.get(streams, s.queue)
    argv = [
        "worker",
        f"--queues={consume}",
        f"--concurrency={s.concurrency}",
        "--pool=prefork",
        f"--loglevel={args.loglevel}",
        f"--hostname=hamnet-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0

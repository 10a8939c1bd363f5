"""``hamnet serve``: run the gateway with uvicorn (registered through the ``hamnet.commands``
entry point, so ``hamnet`` itself never imports FastAPI)."""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP gateway (REST API and web page)",
        description=(
            "Serve the REST API and the web page. Needs Redis (HAMNET_REDIS_URL) and at least "
            "one `hamnet worker` sharing HAMNET_DATA_DIR."
        ),
    )
    p.add_argument("--host", default=None, help="listen address (default HAMNET_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default HAMNET_PORT or 8000)")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides HAMNET_BUNDLE)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.bundle:
        os.environ["HAMNET_BUNDLE"] = args.bundle
    if args.port is not None:
        os.environ["HAMNET_PORT"] = str(args.port)
    if args.host:
        os.environ["HAMNET_HOST"] = args.host
    import uvicorn

    from hamnet_service.settings import get_settings

    s = get_settings()
    problem = s.exposure_problem()
    if problem:
        print(f"hamnet serve: {problem}", file=sys.stderr)
        return 2
    if not s.keys:
        print("hamnet serve: no API keys (HAMNET_API_KEYS): every caller is anonymous, jobs "
              "are reachable by id only and cannot be listed", file=sys.stderr)
    uvicorn.run(
        "hamnet_service.app:app",
        host=s.host,
        port=s.port,
        log_level=args.log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    return 0

"""``hamnet models``: the operator's side of the model registry (docs/MODELS.md).

``publish DIR --name N`` copies a bundle directory into the registry as the next version of
``N``; ``list`` and ``delete NAME@VERSION`` do what the API does. Without ``--api-key`` the
model is *shared* (readable by every caller); with it, it belongs to that key exactly as if the
key had trained it. It talks to Redis and the model store directly (``HAMNET_REDIS_URL``,
``HAMNET_DATA_DIR``/``HAMNET_STORAGE``), so it runs next to the gateway, not through it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="publish, list and delete registry models (operators)",
        description="Manage the model registry: named, immutably versioned bundles that jobs "
        "select with model=NAME or NAME@VERSION. Uses HAMNET_REDIS_URL and the configured "
        "storage (HAMNET_DATA_DIR, or HAMNET_STORAGE=s3 and its bucket).",
    )
    sub = p.add_subparsers(dest="models_cmd", required=True)
    owner = argparse.ArgumentParser(add_help=False)
    owner.add_argument("--api-key", default=None, help="act as this API key (its models); "
                       "default: the shared models every caller can read")
    pub = sub.add_parser("publish", parents=[owner], help="publish a bundle directory as the "
                         "next version of NAME (never overwrites)")
    pub.add_argument("bundle", type=Path, help="bundle directory (manifest.json + ONNX files)")
    pub.add_argument("--name", required=True, help="registry name: 1-64 of a-z 0-9 _ . -")
    pub.add_argument("--source", default=None, help='JSON recorded with the version, e.g. '
                     '\'{"training": "t1"}\'')
    sub.add_parser("list", parents=[owner], help="models the key (or everyone) may use")
    rm = sub.add_parser("delete", parents=[owner], help="delete NAME@VERSION (refused while "
                        "a queued or running job uses it)")
    rm.add_argument("ref", help="NAME@VERSION")
    p.set_defaults(func=_run)


def _owner(api_key: str | None) -> str | None:
    from hamnet_service.auth import owner_of

    return owner_of(api_key) if api_key else None


def _run(args: argparse.Namespace) -> int:
    from hamnet_jobs.registry import RegistryError, parse_ref

    from hamnet_service import state

    reg = state.registry()
    owner = _owner(args.api_key)
    try:
        if args.models_cmd == "publish":
            source = json.loads(args.source) if args.source else None
            mv = reg.publish(owner, args.name, args.bundle, source=source)
            print(json.dumps(mv.summary(), indent=2))
        elif args.models_cmd == "list":
            for mv in reg.list(owner):
                shared = "shared" if mv.shared else "own"
                print(f"{mv.ref:<32} {shared:<6} {mv.checksum[:12]}  {', '.join(mv.classes)}")
        else:
            name, version = parse_ref(args.ref)
            if version is None:
                print("hamnet models delete: name the version (NAME@VERSION)", file=sys.stderr)
                return 2
            reg.delete(owner, name, version)
            print(f"deleted {name}@{version}")
    except RegistryError as e:
        print(f"hamnet models {args.models_cmd}: {e} ({e.code})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hamnet_service.models_cli`` (same as ``hamnet models``)."""
    parser = argparse.ArgumentParser(prog="hamnet")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

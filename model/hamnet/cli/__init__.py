"""The ``hamnet`` command line: one console script, one module per subcommand.

Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
``register`` must only build the parser: heavy imports (torch, onnxruntime, PyAV) happen inside
``func`` so that ``hamnet --help`` is instant and works on a numpy-only install.

Subcommands of other installed packages (``serve`` from the gateway, ``worker`` from the worker)
are discovered through the ``hamnet.commands`` entry point group, so this package never imports
FastAPI or Celery.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hamnet import __version__
from hamnet.errors import HamnetError

# Built-in subcommands, in the order ``--help`` lists them.
_BUILTIN = [
    "hamnet.cli.train",
    "hamnet.cli.synth_features",
    "hamnet.cli.evaluate",
    "hamnet.cli.predict",
    "hamnet.cli.export",
    "hamnet.cli.export_i3d",
    "hamnet.cli.extract",
    "hamnet.cli.flow",
    "hamnet.cli.bundle",
    "hamnet.cli.synth",
    "hamnet.cli.demo",
]


def _plugin_registrars():
    from importlib.metadata import entry_points

    for ep in entry_points(group="hamnet.commands"):
        yield ep.name, ep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamnet",
        description=(
            "Find when actions happen in a video with HAM-Net (weakly-supervised temporal "
            "action localization): train, evaluate, export, extract features, predict, serve."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hamnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _BUILTIN:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:  # subcommand not written yet / not installed
                continue
            raise
        mod.register(sub)
    for name, ep in _plugin_registrars():
        try:
            ep.load()(sub)
        except ModuleNotFoundError:
            # The package providing this command is not installed (e.g. no [service] extra).
            def _missing(args, _name=name):
                print(
                    f"hamnet {_name}: this command needs an extra that is not installed "
                    f"(pip install 'hamnet[service,worker]')",
                    file=sys.stderr,
                )
                return 2

            p = sub.add_parser(name, help=f"(not installed) {name}")
            p.set_defaults(func=_missing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except HamnetError as e:
        print(f"hamnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Where hamnet keeps its files: ``$HAMNET_HOME`` and the default bundle directory.

Why a module of its own: the worker and the gateway only need to know *where* the default
bundle lives, not how it is built. Importing :mod:`hamnet.demo` for that would pull in the
build code (numpy, the config, the video generator); this module imports the standard
library only, so any process can ask for the path cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path


def hamnet_home() -> Path:
    return Path(os.environ.get("HAMNET_HOME") or Path.home() / ".hamnet")


def default_bundle_dir() -> Path:
    """``$HAMNET_HOME/bundles/default`` (HAMNET_HOME defaults to ``~/.hamnet``)."""
    return hamnet_home() / "bundles" / "default"

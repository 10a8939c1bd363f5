"""The trainer tests reuse the service tests' process helpers and their cached mini bundle
(the inference worker's default model)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
sys.path.insert(0, str(SERVICE))

_spec = importlib.util.spec_from_file_location("_service_conftest", SERVICE / "conftest.py")
_service = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_service)

bundle_dir = _service.bundle_dir  # session fixture: the CI-sized demo bundle, cached

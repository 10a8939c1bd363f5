"""Print the OpenAPI document of the app as YAML: ``python -m hamnet_service.openapi >
openapi.yaml``. The committed file is what clients and schemathesis use; a test regenerates
it and fails when the two differ, so the published contract cannot drift from the code."""

from __future__ import annotations

import sys

import yaml


def render() -> str:
    from hamnet_service.app import create_app

    spec = create_app().openapi()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

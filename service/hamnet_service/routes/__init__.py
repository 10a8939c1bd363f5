"""HTTP routes: ``jobs`` (upload, status, result, cancel, list), ``models``, ``health``."""

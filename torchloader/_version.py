"""The version, in one place: the package, its command line and its metadata (pyproject.toml reads it)."""

__version__ = "0.1.0"

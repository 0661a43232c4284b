"""The version, in one place for the package and its command line (pyproject.toml has the same)."""

__version__ = "0.1.0"

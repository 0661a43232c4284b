"""Shared internals: argument and index checks, sample layout, seeds, the Subset rule, worker
processes, units, atomic files. Nothing here is API; ``torchloader/__init__.py`` is."""

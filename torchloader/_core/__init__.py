"""Shared internals: argument checks, sample layout, seeds, worker processes, units."""

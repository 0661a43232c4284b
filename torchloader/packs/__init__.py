"""Packs: decode a folder once into shards (``torchloader pack``), the format, and its checks."""

"""Packs: decode a folder once into shards (``torchloader pack``), the format, its checks, and
``PackedDataset``, which memory-maps them."""

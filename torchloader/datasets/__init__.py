"""The datasets: per-file (``PathDataset``), in RAM (``PreloadedDataset``), a Keras ``Sequence``; and their batching.

``PackedDataset`` reads what ``torchloader pack`` writes, so it lives with the format, in ``packs/``.
"""

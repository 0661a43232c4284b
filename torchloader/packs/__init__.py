"""Packs: decode a folder once into shards, then memory-map them.

In call order:

- ``pack.py``: ``pack()``; what it reads (``_source.py``), where it may write
  (``_destination.py``), and how the shards are written (``_writer.py``): by
  workers, a block at a time (``_blocks.py``), hashed and checked by the main
  process (``_digest.py``);
- ``format.py``: the manifest and ``sources.txt``; ``verify.py``: ``verify_pack``;
- ``dataset.py``: ``PackedDataset``, which maps the shards it has checked (``_maps.py``).
"""

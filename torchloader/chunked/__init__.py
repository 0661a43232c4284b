"""The chunked loader: RAM chunks under a budget, filled by workers, cut into batches.

In call order:

- ``loader.py``: ``ChunkedLoader``, its arguments and the chunk size (``_budget.py``);
- ``_pass.py``: one pass (an epoch) over the loaded chunks;
- ``_producer.py``: the thread that loads chunk ``k + 1`` while chunk ``k`` is served,
  into buffers from ``_buffers.py``;
- ``_fill.py``: how a chunk is filled (NOTE [ how a chunk is filled ] in
  ``torchloader/protocols.py``), with threads, or processes (``_workers.py``);
- ``_cutter.py``: the loaded chunk cut into batches;
- ``stats.py``: what was loaded, and how long the loop waited.
"""

"""How torchloader's samplers tell that a framework splits their order between processes.

# NOTE [ samplers under Lightning and Accelerate ]
torchloader's samplers split the order between ranks themselves (each rank a
random share of every chunk, drawn per epoch). The frameworks split samplers
too, and the two must not both do it (each rank would see half of its share):

- Lightning (``use_distributed_sampler=True``, the default) wraps any sampler
  that is not a ``torch.utils.data.DistributedSampler``. ``ChunkedSampler`` and
  ``IndexBatchSampler`` are ``DistributedSampler`` subclasses, so Lightning leaves
  them in place and only calls their ``set_epoch``.
- Accelerate's ``prepare`` always splits a DataLoader's batch sampler between
  processes (``accelerate.data_loader.BatchSamplerShard``: every
  ``num_processes``-th batch of the batches it is given). A sampler iterated, or
  asked for its length, from inside that class therefore gives the order of
  all ranks, and Accelerate's split is the only one. It is found by looking at
  the few frames that call the sampler: Accelerate offers no flag for "already
  split", and its ``prepare`` re-creates the DataLoader from its sampler.
  ``tests/test_frameworks.py`` runs the real Accelerate on two processes, so a
  rename there fails a test instead of silently splitting twice.
"""

from __future__ import annotations

import sys

__all__ = ["sharded_by_framework"]

_SHARDERS = {("accelerate.data_loader", "BatchSamplerShard")}
_DEPTH = 6  # sampler method <- BatchSampler.__iter__ <- BatchSamplerShard: 3 frames, with room


def sharded_by_framework() -> bool:
    """Whether the sampler method calling this runs inside a framework's batch sharding."""
    try:
        frame = sys._getframe(2)  # the caller of the sampler method that asks
    except ValueError:  # called from the top of a thread's stack: no framework above
        return False
    for _ in range(_DEPTH):
        if frame is None:
            return False
        owner = frame.f_locals.get("self") if "self" in frame.f_code.co_varnames else None
        if owner is not None and (type(owner).__module__, type(owner).__qualname__) in _SHARDERS:
            return True
        frame = frame.f_back
    return False

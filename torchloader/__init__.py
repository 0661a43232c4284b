"""torchloader: fast PyTorch data loading for data sets that may not fit in RAM.

- :class:`PreloadedDataset`: the data in RAM as tensors, each batch one gather.
- :class:`PathDataset`: only the paths in RAM, one file read per sample.
- :class:`ChunkedSampler`: RAM-sized contiguous chunks, shuffled per epoch and rank
  (:func:`epoch_order` is that order as a pure function; :func:`shuffle_quality` says
  how well an order mixes).
- :class:`ChunkedLoader`: loads those chunks into RAM under a budget, serves batches.
- :class:`DeviceLoader`: copies the next batch to the GPU while the model works.
- :func:`pack` and :class:`PackedDataset`: decode once into shards, then memory-map.
- URLs (``s3://``, ``gs://``, ``https://``, through fsspec): ``PackedDataset(url, cache_limit=...)``
  reads a pack through a bounded local cache, ``PathDataset`` reads files; a read that
  fails after its retries raises :class:`RemoteError`.
- :func:`from_sequence`: a Keras-style ``Sequence`` inside a torch ``DataLoader``.
- :class:`RandomResizedCrop` and :class:`CenterCrop`: crops applied while images decode
  (``PathDataset(..., decode=...)``), so folders of every size feed the fast paths.
- :class:`ErrorLog`: the samples ``on_error="skip"`` left out of their batches.
- :class:`SupportsGather` and the other protocols: what a dataset of your own can offer
  so that the loaders take their fast paths for it.

The implementation lives in subpackages (``order``, ``datasets``, ``readers``,
``chunked``, ``packs``, ``remote``, ``tools``, ``_core``); only the names below are the API.
"""

from torchloader._version import __version__ as __version__
from torchloader.chunked.loader import ChunkedLoader
from torchloader.chunked.stats import LoaderStats
from torchloader.datasets.batching import IndexBatchSampler
from torchloader.datasets.path import PathDataset
from torchloader.datasets.preloaded import PreloadedDataset
from torchloader.datasets.sequence import from_sequence
from torchloader.device import DeviceLoader
from torchloader.error_log import ErrorLog, SkippedSample, SkippedSampleWarning
from torchloader.errors import SampleLoadError, TransformError
from torchloader.order.chunking import epoch_order
from torchloader.order.quality import PoorShuffleWarning, ShuffleQuality, shuffle_quality
from torchloader.order.sampler import ChunkedSampler
from torchloader.packs.dataset import PackedDataset
from torchloader.packs.pack import PackSummary, pack
from torchloader.packs.verify import verify_pack
from torchloader.protocols import (
    IntoReader,
    MapDataset,
    SkipsErrors,
    SupportsGather,
    SupportsGatherInto,
    SupportsReadSamplesInto,
)
from torchloader.readers._files import NotRegularFileError
from torchloader.readers.arrays import NpyReader, NpzReader, PtReader
from torchloader.readers.crops import CenterCrop, RandomResizedCrop
from torchloader.readers.image import ImageReader
from torchloader.readers.resize import Resize
from torchloader.readers.suffix import SuffixReader
from torchloader.remote.retries import RemoteError
from torchloader.tools.report import inspect_data

__all__ = [
    "CenterCrop",
    "ChunkedLoader",
    "ChunkedSampler",
    "DeviceLoader",
    "ErrorLog",
    "ImageReader",
    "IndexBatchSampler",
    "IntoReader",
    "LoaderStats",
    "MapDataset",
    "NotRegularFileError",
    "NpyReader",
    "NpzReader",
    "PackSummary",
    "PackedDataset",
    "PathDataset",
    "PoorShuffleWarning",
    "PreloadedDataset",
    "PtReader",
    "RandomResizedCrop",
    "RemoteError",
    "Resize",
    "SampleLoadError",
    "ShuffleQuality",
    "SkippedSample",
    "SkippedSampleWarning",
    "SkipsErrors",
    "SuffixReader",
    "SupportsGather",
    "SupportsGatherInto",
    "SupportsReadSamplesInto",
    "TransformError",
    "epoch_order",
    "from_sequence",
    "inspect_data",
    "pack",
    "shuffle_quality",
    "verify_pack",
]

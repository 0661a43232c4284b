"""torchloader: fast PyTorch data loading for data sets that may not fit in RAM.

- :class:`PreloadedDataset`: the data in RAM as tensors, each batch one gather.
- :class:`PathDataset`: only the paths in RAM, one file read per sample.
- :class:`ChunkedSampler`: RAM-sized contiguous chunks, shuffled per epoch and rank.
- :class:`ChunkedLoader`: loads those chunks into RAM under a budget, serves batches.
- :class:`DeviceLoader`: copies the next batch to the GPU while the model works.
- :func:`pack` and :class:`PackedDataset`: decode once into shards, then memory-map.
- :func:`from_sequence`: a Keras-style ``Sequence`` inside a torch ``DataLoader``.
- :class:`ErrorLog`: the samples ``on_error="skip"`` left out of their batches.
"""

from .batching import IndexBatchSampler
from .chunked import ChunkedLoader
from .chunking import format_bytes, parse_bytes
from .device import DeviceLoader
from .error_log import ErrorLog, SkippedSample, SkippedSampleWarning
from .errors import SampleLoadError, TransformError
from .data_report import inspect_data
from .loader_stats import LoaderStats
from .pack import PackSummary, pack
from .packed import PackedDataset
from .path_dataset import PathDataset
from .preloaded import PreloadedDataset
from .readers import ImageReader, NpyReader, NpzReader, PtReader, SuffixReader
from .resize import Resize
from .sampler import ChunkedSampler
from .sequence import SequenceDataset, SequenceSampler, from_sequence
from .shards import verify_pack
from .shuffle_quality import PoorShuffleWarning

__version__ = "0.1.0"

__all__ = [
    "ChunkedLoader",
    "ChunkedSampler",
    "DeviceLoader",
    "ErrorLog",
    "ImageReader",
    "IndexBatchSampler",
    "LoaderStats",
    "NpyReader",
    "NpzReader",
    "PackSummary",
    "PackedDataset",
    "PathDataset",
    "PoorShuffleWarning",
    "PreloadedDataset",
    "PtReader",
    "Resize",
    "SampleLoadError",
    "SequenceDataset",
    "SequenceSampler",
    "SkippedSample",
    "SkippedSampleWarning",
    "SuffixReader",
    "TransformError",
    "format_bytes",
    "from_sequence",
    "inspect_data",
    "pack",
    "parse_bytes",
    "verify_pack",
]

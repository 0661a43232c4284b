"""Data behind fsspec URLs (``s3://``, ``gs://``, ``https://``, ...): recognising a URL,
reading with retries, the bounded local shard cache, uploading a pack.

Optional: ``pip install 'torchloader[remote]'`` brings fsspec and s3fs; other
protocols need fsspec's own package for them (``gcsfs``, ``aiohttp``, ...).
"""

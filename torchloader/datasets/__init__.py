"""The datasets: per-file (paths), preloaded (tensors in RAM), packed (memory-mapped shards), Keras Sequence."""

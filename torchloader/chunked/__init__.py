"""The chunked loader: RAM chunks under a budget, filled by workers, cut into batches."""

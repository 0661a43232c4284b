"""How samples are ordered: RAM chunks per epoch and rank, and how well they shuffle."""

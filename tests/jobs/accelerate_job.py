"""Accelerate's ``prepare`` and a plain loop with each torchloader loader for 3 epochs.

    python accelerate_job.py DATA OUT                          # one process
    torchrun --nproc_per_node=2 accelerate_job.py DATA OUT     # two CPU processes (gloo)

No ``set_epoch`` in the loop, as in Accelerate's examples: every pass is a new epoch.
"""

from __future__ import annotations

import os
import sys

import torch
from accelerate import Accelerator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MODES, loader, save  # noqa: E402


def main(data: str, out: str) -> None:
    made_before = {mode: loader(mode, data) for mode in MODES}  # before Accelerator()
    accelerator = Accelerator(cpu=True)
    seen: dict = {}
    for mode in MODES:
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        model, optimizer, train = accelerator.prepare(model, optimizer, made_before[mode])
        seen[mode] = {}
        for epoch in range(3):
            labels = seen[mode].setdefault(str(epoch), [])
            for x, y in train:
                labels.extend(y.tolist())
                accelerator.backward(model(x).mean())
                optimizer.step()
                optimizer.zero_grad()
            seen[mode][f"{epoch}-len"] = len(train)
    save(out, accelerator.process_index, seen)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

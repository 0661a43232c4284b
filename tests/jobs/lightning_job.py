"""``Trainer.fit`` with each torchloader loader for 3 epochs; records what each rank trained on.

python lightning_job.py DATA OUT                          # one device
torchrun --nproc_per_node=2 lightning_job.py DATA OUT     # DDP, 2 gloo processes
"""

from __future__ import annotations

import os
import sys

import pytorch_lightning as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MODES, loader, save  # noqa: E402


class Recorder(pl.LightningModule):
    def __init__(self, seen: dict) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.setdefault(str(self.current_epoch), []).extend(y.tolist())
        return self.layer(x).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def main(data: str, out: str) -> None:
    devices = int(os.environ.get("WORLD_SIZE", "1"))
    seen: dict = {}
    for mode in MODES:
        train = loader(mode, data)  # before the Trainer: no process group yet
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy="ddp" if devices > 1 else "auto",
            max_epochs=3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        seen[mode] = {}
        trainer.fit(Recorder(seen[mode]), train_dataloaders=train)
    save(out, int(os.environ.get("RANK", "0")), seen)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

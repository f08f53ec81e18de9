"""Trainer plug-ins: atomic checkpoint files, safe loading, and the resumable data order."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..files import atomic_write
from .data import StepBatchSampler


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file beside it, then renames it into place (Lightning's
    own writer stages the file in the system temp dir, which is not atomic across file systems),
    and loads with ``weights_only=True`` unless told otherwise: no arbitrary unpickling."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        weights_only = True if weights_only is None else weights_only
        location = map_location or (lambda storage, loc: storage)
        return super().load_checkpoint(path, map_location=location, weights_only=weights_only)


class DataOrder(pl.Callback):
    """Counts the batches trained on and, on resume, restarts the sampler's stream there.

    Its state is saved in the checkpoint and restored before the training loader is iterated;
    checkpoint callbacks run after it, so a checkpoint records the batches it contains.
    """

    def __init__(self, sampler: StepBatchSampler):
        self.sampler = sampler
        self.batches_done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches_done += 1

    def state_dict(self) -> dict:
        return {"batches_done": self.batches_done}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_done = int(state_dict["batches_done"])
        self.sampler.start_batch = self.batches_done

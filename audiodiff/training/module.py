"""The Lightning module: one training step, the EMA, and validation with the EMA weights.

Everything is built outside and passed in (house style): the model, its config, the loss
function and the optimiser settings. The module owns no data. The EMA is a separate copy of the
model, updated by :func:`ema_update` after each optimiser step and saved with the checkpoint
(``ema.*`` in its ``state_dict``); validation runs on it directly, nothing is swapped.

Randomness of the loss (t and z) comes from a generator seeded by (seed, step, rank), not from the
global RNG, so a resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from .. import __version__
from ..config import ModelConfig
from ..enhance import Enhancer
from ..metrics import METRICS, compute_metrics
from ..spec import Spectrogram

# loss_fn(model, x0, y, generator=...) -> per-example losses (B,); x0, y: (B, 1, F, T) complex
LossFn = Callable[..., torch.Tensor]
_STREAMS = {"train": 0, "valid": 1}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for every parameter; buffers are copied."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("the EMA and the model have different parameters")
    for averaged, current in zip(ema_params, params):
        averaged.lerp_(current.detach(), 1.0 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)


def cosine_factor(step: int, final: float, steps: int) -> float:
    """The learning-rate factor at ``step``: 1 at step 0, ``final`` from step ``steps`` on, a half
    cosine in between."""
    progress = min(step / max(steps, 1), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stream_seed(seed: int, stream: str, index: int, rank: int) -> int:
    """A 63-bit seed for (seed, stream, index, rank), e.g. (seed, "train", global step, rank)."""
    state = np.random.SeedSequence([seed, _STREAMS[stream], index, rank]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


class EnhancementModule(pl.LightningModule):
    """Trains ``model`` with ``loss_fn`` (Adam, ``lr``), keeps ``ema``, validates with the EMA.

    Batches are waveforms ``(clean, noisy)``, each (B, L), already divided by max|noisy|; the STFT
    runs here, on the device. Validation loader 0 gives crops (loss), loader 1 whole files
    ``(clean, noisy, index)`` that are enhanced with the model's default mode and sampler.
    """

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        loss_fn: LossFn,
        *,
        lr: float = 1e-4,
        lr_final: float | None = None,
        schedule_steps: int | None = None,
        ema_decay: float = 0.999,
        seed: int = 0,
        ema: nn.Module | None = None,
        metadata: dict | None = None,
    ):
        super().__init__()
        self.model = model
        self.ema = (ema if ema is not None else copy.deepcopy(model)).requires_grad_(False)
        self.config = config
        self.loss_fn = loss_fn
        self.lr, self.ema_decay, self.seed = lr, ema_decay, seed
        self.lr_final = lr_final  # None: constant lr; else cosine to it at schedule_steps
        self.schedule_steps = schedule_steps  # None: the trainer's max_steps
        self.metadata = dict(metadata or {})
        self.spectrogram = Spectrogram(config.spec)
        self._sums: torch.Tensor | None = None  # validation sums and counts, see _accumulate
        # validation is sharded by rank: a rank may get no evaluation file
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def _generator(self, stream: str, index: int) -> torch.Generator:
        seed = stream_seed(self.seed, stream, index, self.global_rank)
        return torch.Generator(self.device).manual_seed(seed)

    def _spectrograms(self, clean: torch.Tensor, noisy: torch.Tensor):
        """(B, L) waveforms -> x0, y: (B, 1, F, T) compressed complex."""
        return self.spectrogram.analyse(clean), self.spectrogram.analyse(noisy)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x0, y = self._spectrograms(*batch)
        generator = self._generator("train", self.global_step)
        loss = self.loss_fn(self.model, x0, y, generator=generator).mean()
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        optimizer.step(closure=optimizer_closure)
        ema_update(self.ema, self.model, self.ema_decay)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        if self.lr_final is None:
            return optimizer
        steps = self.schedule_steps or self.trainer.max_steps
        factor = partial(cosine_factor, final=self.lr_final / self.lr, steps=steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_start(self) -> None:
        if self.global_step == 0:  # start the EMA from the (DDP-broadcast) initial weights
            self.ema.load_state_dict(self.model.state_dict())

    # -- validation -------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        # [loss sum, loss count, then (sum, count) for each of METRICS]
        self._sums = torch.zeros(2 + 2 * len(METRICS), dtype=torch.float64, device=self.device)

    def _accumulate(self, slot: int, values: torch.Tensor) -> None:
        finite = values[torch.isfinite(values)].double()
        self._sums[2 * slot] += finite.sum()
        self._sums[2 * slot + 1] += finite.numel()

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            x0, y = self._spectrograms(*batch)
            generator = self._generator("valid", batch_idx)
            self._accumulate(0, self.loss_fn(self.ema, x0, y, generator=generator))
            return
        clean, noisy, index = batch  # (1, L), (1, L), (1,)
        enhanced = self.enhance(noisy[0].float().cpu(), seed=self.seed + int(index[0]))
        scores = compute_metrics(clean[0].cpu().numpy(), enhanced.numpy(), self.sample_rate)
        for slot, name in enumerate(METRICS, start=1):
            self._accumulate(slot, torch.tensor([scores[name]]))

    @property
    def sample_rate(self) -> int:
        return self.config.spec.sample_rate

    def enhance(self, noisy: torch.Tensor, seed: int) -> torch.Tensor:
        """Enhance one waveform (L,) with the EMA model: default mode and sampler, in float32."""
        settings = replace(self.config.sampler, mode=self.config.default_mode)
        enhancer = Enhancer(self.ema, self.config, device=self.device)
        with torch.autocast(self.device.type, enabled=False):
            (out,) = enhancer.enhance_rows([noisy], self.sample_rate, settings, seed=seed)
        return out

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._sums, reduce_op="sum")  # over all ranks
        for slot, name in enumerate(("valid_loss", *METRICS)):
            total, count = totals[2 * slot], totals[2 * slot + 1]
            if count > 0:  # the value is the same on every rank; sync_dist keeps Lightning quiet
                value = (total / count).float()
                self.log(name, value, prog_bar=name != "estoi", sync_dist=True)

    # -- checkpoints ------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["audiodiff"] = {
            "model_config": self.config.to_dict(),
            "version": __version__,
            **self.metadata,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("audiodiff", {}).get("model_config")
        # compared as configs: files written before a field existed hold its default implicitly
        if saved is not None and ModelConfig.from_dict(saved) != self.config:
            raise ValueError(
                "the checkpoint was trained with a different model config than this recipe's"
            )

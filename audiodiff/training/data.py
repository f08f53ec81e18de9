"""Training and validation data for a recipe: datasets, a resumable batch order, DDP sharding.

The training stream is a function of (seed, batch number): global batch ``b`` holds the items at
stream positions ``b·B·W + r·B + j`` (batch size B, world size W, rank r), and position ``p``
is item ``perm_e[p mod N]`` of epoch ``e = p div N`` (a seeded permutation of the N items per
epoch). Each item is then drawn by the dataset from (seed, epoch, index) alone. So a run resumed at
batch ``b`` sees exactly the batches an uninterrupted run sees, on any number of workers, and
the ranks of a DDP run see disjoint parts of the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.datasets import OnTheFlyMixDataset, PairedDataset
from ..data.pairs import find_pairs, list_audio_files
from ..spec import SpecConfig
from .recipe import DataConfig


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ItemsByEpoch(Dataset):
    """``dataset[(epoch, index)]`` = item ``index`` of ``epoch`` of a dataset with ``set_epoch``.

    Each DataLoader worker holds its own copy, so setting the epoch per item is safe.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class StepBatchSampler(Sampler):
    """Endless batches of (epoch, index) keys, batch ``b`` a function of (seed, b, rank).

    ``start_batch`` is where the next iterator begins (set on resume). Rank and world size are
    read when iteration starts, i.e. after the DDP process group exists.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        if num_items < 1 or batch_size < 1:
            raise ValueError("need num_items >= 1 and batch_size >= 1")
        self.num_items, self.batch_size, self.seed, self.shuffle = (
            num_items,
            batch_size,
            seed,
            shuffle,
        )
        self.start_batch = 0
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            rng = np.random.default_rng([self.seed, epoch, 2])
            order = rng.permutation(self.num_items) if self.shuffle else np.arange(self.num_items)
            self._orders = {epoch: order}  # the stream only moves forward
        return order

    def batch(self, b: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """Keys of global batch ``b`` for ``rank`` of ``world``."""
        first = (b * world + rank) * self.batch_size
        keys = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.num_items)
            keys.append((epoch, int(self._order(epoch)[offset])))
        return keys

    def __iter__(self):
        rank, world = dist_rank_world()
        b = self.start_batch
        while True:
            yield self.batch(b, rank, world)
            b += 1


class ShardSampler(Sampler):
    """Indices ``rank, rank + W, ...`` of ``range(n)`` (validation work split across ranks)."""

    def __init__(self, n: int):
        self.n = n

    def __iter__(self):
        rank, world = dist_rank_world()
        return iter(range(rank, self.n, world))

    def __len__(self) -> int:
        rank, world = dist_rank_world()
        return len(range(rank, self.n, world))


class WithIndex(Dataset):
    """Item ``i`` -> (*dataset[i], i): lets validation seed each file by its global index."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return (*self.dataset[index], index)


@dataclass
class RecipeData:
    """The datasets of a recipe: training crops, validation crops, whole evaluation files."""

    train: Dataset  # item (clean, noisy), each (L,), has set_epoch
    valid: Dataset | None  # centred crops, the same every validation
    eval_files: Dataset | None  # whole utterances, item (clean, noisy, index)


def _evenly_spaced(items: list, count: int) -> list:
    """``count`` items spread over the list (as the sgmse reference picks its eval files)."""
    if count >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def _split(files: list[Path], count: int, rng: np.random.Generator) -> tuple[list, list]:
    """A seeded choice of ``count`` held-out files -> (kept, held out)."""
    if count >= len(files):
        raise ValueError(f"cannot hold out {count} of {len(files)} files and still train")
    held = set(rng.choice(len(files), size=count, replace=False).tolist()) if count else set()
    return [f for i, f in enumerate(files) if i not in held], [files[i] for i in sorted(held)]


def _paired_valid(base: str, crop: int, num_eval: int, rate: int) -> tuple[Dataset, Dataset | None]:
    pairs = find_pairs(base, "valid")
    valid = PairedDataset(pairs, crop, train=False, sample_rate=rate)
    chosen = _evenly_spaced(pairs, num_eval)
    files = PairedDataset(chosen, None, train=False, sample_rate=rate) if chosen else None
    return valid, files


def build_data(
    data: DataConfig, spec: SpecConfig, crop_samples: int, num_eval_files: int, seed: int
) -> RecipeData:
    """The recipe's datasets; file lists are read here, missing folders raise naming them."""
    rate = spec.sample_rate
    if data.kind == "paired":
        pairs = find_pairs(data.base, "train")
        train = PairedDataset(pairs, crop_samples, train=True, seed=seed, sample_rate=rate)
        valid, files = _paired_valid(
            data.valid.base or data.base, crop_samples, num_eval_files, rate
        )
        return RecipeData(train, valid, WithIndex(files) if files else None)
    rng = np.random.default_rng([data.valid.seed, 3])
    clean, held_clean = _split(list_audio_files(data.clean), data.valid.holdout_clean, rng)
    noise, held_noise = _split(list_audio_files(data.noise), data.valid.holdout_noise, rng)
    rirs = list_audio_files(data.rir) if data.rir else []
    common = {"config": data.mix}
    train = OnTheFlyMixDataset(
        clean,
        noise,
        rirs,
        crop_samples=crop_samples,
        epoch_size=data.epoch_size,
        seed=seed,
        **common,
    )
    if data.valid.base is not None:
        valid, files = _paired_valid(data.valid.base, crop_samples, num_eval_files, rate)
        return RecipeData(train, valid, WithIndex(files) if files else None)
    held_clean, held_noise = held_clean or clean, held_noise or noise
    v_seed = data.valid.seed
    valid = OnTheFlyMixDataset(
        held_clean, held_noise, rirs, crop_samples=crop_samples, epoch_size=data.valid.mixtures,
        seed=v_seed, **common,
    )  # fmt: skip
    files = None
    if num_eval_files:
        files = OnTheFlyMixDataset(
            held_clean, held_noise, rirs, crop_samples=None, epoch_size=num_eval_files,
            seed=v_seed + 1, **common,
        )  # fmt: skip
    return RecipeData(train, valid, WithIndex(files) if files else None)


def make_loaders(
    data: RecipeData, batch_size: int, seed: int, num_workers: int = 0, pin_memory: bool = False
) -> tuple[DataLoader, StepBatchSampler, list[DataLoader]]:
    """(endless training loader, its resumable sampler, validation loaders [crops, eval files])."""
    sampler = StepBatchSampler(len(data.train), batch_size, seed)
    options = {"num_workers": num_workers, "pin_memory": pin_memory}
    options["persistent_workers"] = num_workers > 0
    train = DataLoader(ItemsByEpoch(data.train), batch_sampler=sampler, **options)
    valid = []
    if data.valid is not None:
        shard = ShardSampler(len(data.valid))
        valid.append(DataLoader(data.valid, batch_size=batch_size, sampler=shard, **options))
    if data.eval_files is not None:
        shard = ShardSampler(len(data.eval_files))
        valid.append(DataLoader(data.eval_files, batch_size=1, sampler=shard, **options))
    return train, sampler, valid

"""Data side of training: seeded per-sample augmentation, resumable loaders, the LightningDataModule.

The datasets come from a factory (``train`` / ``val`` / ``test`` -> dataset): the build layer makes it from the
config (:func:`cinet.build.data.build_datamodule`); nothing here reads the config.

Reproducibility design:

* The training order of epoch ``e`` is a permutation seeded by ``(seed, e)`` (:class:`ShardedSampler`); under
  DDP each rank takes every ``world``-th index of it (padded to equal length, like ``DistributedSampler``).
* Each sample's augmentation is seeded by ``(seed, e, index)`` (:class:`SeededDataset`), so the augmented
  batch does not depend on the number of workers, on the rank, or on where training was resumed.
* :class:`ResumableDataLoader` implements Lightning's ``state_dict`` / ``load_state_dict`` (``_Stateful``)
  so that a checkpoint taken in the middle of an epoch resumes with the next unseen batch of that epoch.
* The loader sets its sampler's epoch itself when an iterator is created (from the trainer's epoch counter, or
  from a restored position). With worker processes the DataLoader draws its first indices as soon as the
  iterator exists, and a resumed Lightning fit creates the first iterator *before* it calls ``set_epoch``: the
  sampler would otherwise still hold epoch 0 and the resumed epoch would draw epoch 0's order and
  augmentation (issue 25).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cinet.data import DatasetInfo
from cinet.data.base import collate, normalize_image, to_tensor_sample
from cinet.engine.distributed import dist_info
from cinet.utils.signals import ignore_in_worker

log = logging.getLogger(__name__)

__all__ = [
    "CINetDataModule",
    "CachedDataset",
    "DataSettings",
    "ResumableDataLoader",
    "SeededDataset",
    "ShardedSampler",
]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed from ``(seed, epoch, index)`` (stable across processes and Python versions)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU) / numpy / random for the duration of the block, then restore the previous states.

    Only torch's CPU generator, the one the transforms draw from: ``torch.manual_seed`` also queues a seed for
    every lazily initialised accelerator (CUDA, XPU, MTIA), recording a Python stack each time, which cost
    ~1.7 ms per sample (3 s of the 131 s ``make demo``, 1760 samples; cProfile, AMD EPYC).
    """
    t_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(t_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class SeededDataset(Dataset):
    """Wraps a dataset; an index ``(i, seed)`` seeds the global RNGs before loading sample ``i``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            with _seeded(seed):
                return self.dataset[index]
        return self.dataset[key]


class CachedDataset(Dataset):
    """Keeps the decoded (untransformed) samples of a :class:`cinet.data.base.BaseDataset` in memory."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self.info = dataset.info
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with self.dataset.sample_context(index):  # a failure names the sample (dataset, index, file)
            if index not in self._cache:
                self._cache[index] = to_tensor_sample(self.dataset._load(index), self.info)
            raw = self._cache[index]
            sample = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()}
            sample["meta"] = dict(raw["meta"])
            transform = self.dataset.transform
            if transform is not None:
                sample = transform(sample)
            if not sample["meta"].pop("normalized", False):
                sample["image"] = normalize_image(sample["image"], self.info.mean, self.info.std)
        return sample


class ShardedSampler(Sampler):
    """Seeded, epoch-aware, rank-sharded sampler that can skip the already-seen part of an epoch.

    Args:
        size: Dataset length.
        shuffle: Permute the indices (seeded by ``(seed, epoch)``).
        seed: Base seed.
        pad: Pad with repeated indices so every rank gets the same count (training); False for evaluation
            (no duplicates: ranks may get one sample less).
        with_seed: Yield ``(index, sample_seed)`` for :class:`SeededDataset` instead of plain indices.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, pad: bool = True, with_seed: bool = True):
        self.size = int(size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.pad = pad
        self.with_seed = with_seed
        self.epoch = 0
        self.skip = 0  # samples of this rank to skip at the next __iter__ (resume)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def _indices(self) -> list[int]:
        rank, world = dist_info()
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if world > 1:
            if self.pad and self.size % world:
                order += order[: world - self.size % world]
            order = order[rank::world]
        return order

    def __len__(self) -> int:
        rank, world = dist_info()
        if world == 1:
            return self.size
        if self.pad:
            return -(-self.size // world)
        return len(range(rank, self.size, world))

    def __iter__(self) -> Iterator[Any]:
        order = self._indices()
        skip, self.skip = self.skip, 0
        epoch = self.epoch
        for i in order[skip:]:
            yield (i, sample_seed(self.seed, epoch, i)) if self.with_seed else i


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position within the epoch is saved in Lightning checkpoints.

    ``progress`` returns the number of batches of the current epoch already trained on (read from the
    trainer's loop, not from this loader, which runs ahead because of prefetching).
    """

    def __init__(
        self,
        *args: Any,
        progress: Callable[[], int] | None = None,
        epoch: Callable[[], int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self._progress = progress
        self._epoch = epoch
        self._restored = False  # load_state_dict positioned the sampler for the next iterator

    def __iter__(self) -> Any:
        """Set the sampler's epoch, then create the iterator (whose workers start drawing indices at once).

        The epoch is the restored one after :meth:`load_state_dict`, else ``epoch()`` (the trainer's count of
        finished epochs: what Lightning passes to ``set_epoch`` for the epoch about to run).
        """
        if self._restored:
            self._restored = False
        elif self._epoch is not None:
            self._sharded.set_epoch(int(self._epoch()))
        return super().__iter__()

    @property
    def _sharded(self) -> ShardedSampler:
        sampler = self.sampler
        assert isinstance(sampler, ShardedSampler)
        return sampler

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": b}``: ``b`` batches of epoch ``e`` are done."""
        batches = int(self._progress()) if self._progress is not None else 0
        return {"epoch": self._sharded.epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Position the sampler after the batches recorded in ``state`` (the next epoch if it was complete)."""
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self._sharded.set_epoch(epoch)
        self._sharded.skip = batches * int(self.batch_size or 1)
        self._restored = True
        log.info("resuming data order at epoch %d, batch %d", epoch, batches)


# ------------------------------------------------------------------------------------------------ the module


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What the data module needs besides its datasets (the build layer fills it from ``data.*``).

    Attributes:
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size per device.
        num_workers: DataLoader worker processes.
        validate: There is a validation split.
        image_size: ``(H, W)`` every sample is resized to (None: native sizes).
        crop_size: ``(H, W)`` of the random training crop (None: no crop).
        source: Where the training data is (a folder, or ``name/split``), for the depth-unit warning.
        depth_setting: The setting that converts the stored depth to metres, for that warning.
        train_size_hint, eval_size_hint: How to fix a training / evaluation batch of samples that differ in size
            (the end of that error, :func:`cinet.data.base.collate`; the build layer names its settings).
    """

    batch_size: int
    eval_batch_size: int
    num_workers: int
    validate: bool = True
    image_size: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = None
    source: str = ""
    depth_setting: str = ""
    train_size_hint: str = "resize the samples to one size"
    eval_size_hint: str = "resize the samples to one size or evaluate one image per batch"


class CINetDataModule(L.LightningDataModule):
    """Train / val / test loaders over the datasets of a factory.

    Args:
        datasets: ``train`` / ``val`` / ``test`` -> that dataset (called once per split, on first use).
        settings: Batch sizes, workers, image sizes (:class:`DataSettings`).
        info: The dataset's description, computed on first use without building a split.
        seed: Seed of the data order and augmentation.
    """

    def __init__(
        self,
        datasets: Callable[[str], Any],
        settings: DataSettings,
        info: Callable[[], DatasetInfo],
        seed: int = 0,
    ):
        super().__init__()
        self.settings = settings
        self.seed = int(seed)
        self._make = datasets
        self._info = info
        self._datasets: dict[str, Any] = {}

    def dataset(self, which: str) -> Any:
        """``train`` / ``val`` / ``test`` dataset (built on first use)."""
        if which not in self._datasets:
            self._datasets[which] = self._make(which)
        return self._datasets[which]

    @property
    def info(self) -> DatasetInfo:
        """The dataset's description (from its class; no split is built), with the images' normalisation."""
        return self._info()

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def _epoch(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_progress.current.processed)

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train")
        if len(ds) < self.settings.batch_size:
            raise ValueError(
                f"batch_size: {self.settings.batch_size} is larger than the training set ({len(ds)} samples)"
            )
        sampler = ShardedSampler(len(ds), shuffle=True, seed=self.seed, pad=True, with_seed=True)
        return ResumableDataLoader(
            SeededDataset(ds),
            batch_size=self.settings.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.settings.num_workers,
            collate_fn=functools.partial(collate, size_hint=self.settings.train_size_hint),
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.settings.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # never draws from the global RNG
            progress=self._progress,
            epoch=self._epoch,
            worker_init_fn=ignore_in_worker,  # SIGINT / SIGTERM to the group: the main process stops them
        )

    def _eval_loader(self, which: str) -> DataLoader:
        ds = self.dataset(which)
        sampler = ShardedSampler(len(ds), shuffle=False, seed=self.seed, pad=False, with_seed=False)
        return DataLoader(
            ds,
            batch_size=self.settings.eval_batch_size,
            sampler=sampler,
            num_workers=self.settings.num_workers,
            collate_fn=functools.partial(collate, size_hint=self.settings.eval_size_hint),
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),
            worker_init_fn=ignore_in_worker,
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.settings.validate:
            return []
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

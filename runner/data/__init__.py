"""Framework-neutral data layer: sources → one decoded uint8 cache → seeded stratified splits →
seeded per-epoch batch plans (order + augmentation draws) that every framework replays exactly.

Public API::

    ds = prepare(cfg.data, seed)            # PreparedDataset (x memmap, y, split indices, mean/std, split_hash)
    plan = epoch_batches(ds, seed, epoch, batch_size, cfg.train.augment)   # frameworks.base.Batches
    apply_augment(images, hflip, vflip, rot90)   # numpy reference of the augmentation
    print(dataset_card(ds))
    resolve_config(cfg.data)                # plain dict with absolute paths, to ship to a Ray actor

``python -m runner.data [data=…] [seed=…]`` prints the dataset card.
"""
from __future__ import annotations

from core.batches import AUGMENTATIONS, apply_augment, augment_flags, epoch_batches
from runner.data.cache import CACHE_VERSION, PreparedDataset, build_source, prepare, resolve_config
from runner.data.card import dataset_card
from core.errors import DataError

__all__ = [
    "AUGMENTATIONS", "CACHE_VERSION", "DataError", "PreparedDataset", "apply_augment", "augment_flags",
    "build_source", "dataset_card", "epoch_batches", "prepare", "resolve_config",
]

"""A plain-text dataset card: what was loaded, how it was split, where it is cached."""
from __future__ import annotations

import numpy as np


def _fmt_vector(v: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(a):.4f}" for a in v) + "]"


def dataset_card(ds) -> str:
    """Source, classes, per-split × per-class counts, image shape, split hash, cache, timing."""
    splits = {"train": ds.train_idx, "val": ds.val_idx, "test": ds.test_idx}
    y = np.asarray(ds.y)
    counts = {name: np.bincount(y[idx], minlength=ds.num_classes) for name, idx in splits.items()}
    total = np.bincount(y, minlength=ds.num_classes)
    n = len(y)
    images_state = "cache hit" if ds.images_from_cache else "decoded now"
    split_state = "cache hit" if ds.split_from_cache else "computed now"
    lines = [
        f"Dataset card: {ds.name}",
        f"  source         {ds.source}",
        f"  classes        {ds.num_classes}: {', '.join(ds.classes)}",
        f"  images         {n:,} × {ds.x.shape[1]}×{ds.x.shape[2]}×{ds.x.shape[3]} {ds.x.dtype} "
        f"(RGB, resized with Pillow {ds.resample} where not already that size)",
        f"  skipped        {len(ds.skipped_files)} unreadable file(s)"
        + (": " + ", ".join(ds.skipped_files[:10]) + (" …" if len(ds.skipped_files) > 10 else "")
           if ds.skipped_files else ""),
        f"  split          seed {ds.seed}, stratified: test {ds.test_fraction:g} of all, "
        f"val {ds.val_fraction:g} of the rest → train {len(ds.train_idx):,} / val {len(ds.val_idx):,} "
        f"/ test {len(ds.test_idx):,}",
        f"  split hash     {ds.split_hash}",
        f"  normalisation  mean {_fmt_vector(ds.mean)}  std {_fmt_vector(ds.std)} (train split, [0,1] units)",
        f"  cache          {ds.cache_path}",
        f"  from cache     {'yes' if ds.from_cache else 'no'} (images: {images_state}; split: {split_state})",
        f"  prepared in    {ds.prepare_seconds:.2f} s",
        "",
    ]
    width = max([len("class"), len("total")] + [len(c) for c in ds.classes])
    header = f"  {'class':<{width}}  {'train':>7}  {'val':>7}  {'test':>7}  {'total':>7}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for c, name in enumerate(ds.classes):
        lines.append(f"  {name:<{width}}  {counts['train'][c]:>7,}  {counts['val'][c]:>7,}  "
                     f"{counts['test'][c]:>7,}  {total[c]:>7,}")
    lines.append("  " + "-" * (len(header) - 2))
    lines.append(f"  {'total':<{width}}  {len(ds.train_idx):>7,}  {len(ds.val_idx):>7,}  "
                 f"{len(ds.test_idx):>7,}  {n:>7,}")
    return "\n".join(lines)

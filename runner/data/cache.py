"""Decode once per data config, split once per (data config, seed): a content-keyed cache.

Layout under ``cache_dir``::

    <name>-<images_key>/            committed by one atomic directory rename
        images.npy                  uint8 (N, S, S, 3), opened with mmap (never copied per seed)
        labels.npy                  int64 (N,)
        meta.json                   classes, source, skipped files, fingerprint
        split-seed<seed>-test<t>-val<v>.npz   train/val/test indices, mean/std, split_hash (one per seed)
    .locks/<name>-<images_key>.lock  fcntl lock: concurrent preparers wait instead of decoding twice

``images_key`` = hash(source content fingerprint, image_size, on_corrupt, resample filter,
CACHE_VERSION): any changed file or option gives a new key, so a stale cache is never served.
``split_hash`` = hash(digest of the decoded pixels + labels + class names, split options, seed, the
split indices): it names exactly what a model saw, so the zip and the extracted folder give the same
hash, and a machine whose JPEG decoder yields other pixels gives a different one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from core.atomic import atomic_write
from core.config import DATA_SCHEMAS, ConfigError, check_node
from core.errors import DataError
from core.seeding import rng
from runner.data.sources import RESAMPLE, Source

try:  # POSIX; elsewhere the atomic directory rename alone keeps concurrent preparers safe
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

CACHE_VERSION = "2"  # bump when the cached arrays' meaning changes
_SPLIT_VERSION = "1"
_PATH_OPTIONS = ("path", "cache_dir")
_STATS_CHUNK = 4096  # images per chunk when computing mean/std (bounded memory for big sets)


@dataclass
class PreparedDataset:
    """A decoded, split dataset: the arrays every framework reads, plus provenance for result rows."""

    name: str
    source: str
    classes: list[str]
    x: np.ndarray  # uint8 (N, H, W, 3); a read-only memmap of the cache
    y: np.ndarray  # int64 (N,)
    train_idx: np.ndarray  # int64, sorted
    val_idx: np.ndarray
    test_idx: np.ndarray
    mean: np.ndarray  # float32 (3,), [0, 1] units, train split
    std: np.ndarray
    split_hash: str
    cache_path: str  # the images directory; the split file lives inside it
    prepare_seconds: float
    from_cache: bool  # images and split both served from the cache
    skipped_files: list[str] = field(default_factory=list)
    seed: int = 0
    images_key: str = ""
    images_from_cache: bool = False
    split_from_cache: bool = False
    split_file: str = ""
    split_seed: int = 0  # the seed the split was drawn with: ``seed`` (resampled design) or ``data.split_seed`` (fixed)
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    resample: str = RESAMPLE

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.x.shape[1])

    def indices(self, split: str) -> np.ndarray:
        """The sample indices of ``split`` ("train", "val" or "test")."""
        try:
            return {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}[split]
        except KeyError:
            raise DataError(f"unknown split {split!r}; choose train, val or test") from None


# --- configuration -------------------------------------------------------------------------------

def resolve_config(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` node as a plain dict: interpolations resolved, ``path``/``cache_dir`` made absolute
    against this process's working directory — resolve in the driver, then ship it to actors."""
    try:
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        DictConfig = ()  # type: ignore[assignment]
    if DictConfig and isinstance(data_cfg, DictConfig):
        try:
            plain = OmegaConf.to_container(data_cfg, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:  # ``path: ???`` left unset
            key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "?")
            key = key if key.startswith("data.") else f"data.{key}"
            raise DataError(f"{key} is required: set it on the command line, e.g. {key}=<value>") from exc
        except OmegaConfBaseException as exc:
            raise DataError(f"data config: {str(exc).splitlines()[0]}") from exc
    else:
        plain = dict(data_cfg)
    if not isinstance(plain, dict):
        raise DataError(f"data config must be a mapping, got {type(data_cfg).__name__}")
    for option in _PATH_OPTIONS:  # absolute now: an actor may run in another working directory
        value = plain.get(option)
        if isinstance(value, (str, os.PathLike)) and str(value).strip() and value != "???":
            plain[option] = str(Path(value).expanduser().resolve())
    return plain


def build_source(data_cfg: Mapping[str, Any]) -> Source:
    """Check the node against its source's schema (``core.config.DATA_SCHEMAS``: unknown keys, types,
    ranges) and build its ``_target_`` with ``hydra.utils.instantiate``."""
    import hydra.utils

    cfg = resolve_config(data_cfg)
    target = cfg.get("_target_")
    schema = DATA_SCHEMAS.get(target) if isinstance(target, str) else None
    if schema is None:
        raise DataError(f"data._target_ {target!r} is not a runner.data source; choose one of {sorted(DATA_SCHEMAS)}")
    try:
        check_node(schema, cfg, "data")
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    return hydra.utils.instantiate(cfg, _convert_="all")


# --- hashing -------------------------------------------------------------------------------------

def _hash(payload: Any, *arrays: np.ndarray) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def images_key(source: Source, fingerprint: Mapping[str, Any]) -> str:
    return _hash({"cache_version": CACHE_VERSION, "fingerprint": fingerprint, "image_size": source.image_size,
                  "on_corrupt": source.on_corrupt, "resample": RESAMPLE})


def pixels_digest(x: np.ndarray, y: np.ndarray, classes: list[str]) -> str:
    """Digest of the decoded arrays themselves (not of the files they came from)."""
    digest = hashlib.blake2b(digest_size=32)
    digest.update(json.dumps({"classes": classes, "shape": list(x.shape)}).encode())
    for start in range(0, len(x), _STATS_CHUNK):
        digest.update(np.ascontiguousarray(x[start:start + _STATS_CHUNK]).data)
    digest.update(np.ascontiguousarray(y, dtype=np.int64).data)
    return digest.hexdigest()


def split_hash(pixels: str, test_fraction: float, val_fraction: float, seed: int,
               train_idx: np.ndarray, val_idx: np.ndarray, test_idx: np.ndarray) -> str:
    return _hash({"split_version": _SPLIT_VERSION, "pixels_digest": pixels, "test_fraction": test_fraction,
                  "val_fraction": val_fraction, "seed": seed,
                  "sizes": [len(train_idx), len(val_idx), len(test_idx)]},
                 train_idx, val_idx, test_idx)


# --- atomic files and locking --------------------------------------------------------------------

@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


# --- images --------------------------------------------------------------------------------------

def _read_meta(images_dir: Path, key: str) -> dict[str, Any] | None:
    """The committed cache's metadata, or None when absent or not a complete cache for ``key``."""
    try:
        meta = json.loads((images_dir / "meta.json").read_text())
        if meta.get("cache_version") != CACHE_VERSION or meta.get("images_key") != key:
            return None
        x = np.load(images_dir / "images.npy", mmap_mode="r")
        y = np.load(images_dir / "labels.npy", mmap_mode="r")
        if x.shape != (meta["count"], meta["image_size"], meta["image_size"], 3) or y.shape != (meta["count"],):
            return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def _build_images(source: Source, fingerprint: Mapping[str, Any], key: str, images_dir: Path) -> dict[str, Any]:
    """Decode everything into a temp directory, then commit it with one rename."""
    started = time.perf_counter()
    decoded = source.load()  # DataError here leaves nothing behind: nothing is written yet
    meta = {
        "cache_version": CACHE_VERSION, "images_key": key, "name": source.name, "source": source.describe(),
        "classes": decoded.classes, "count": int(len(decoded.y)), "image_size": source.image_size,
        "resample": RESAMPLE, "on_corrupt": source.on_corrupt, "skipped_files": decoded.skipped_files,
        "pixels_digest": pixels_digest(decoded.x, decoded.y, decoded.classes),
        "fingerprint": fingerprint, "decode_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = images_dir.with_name(f".tmp-{images_dir.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        _write_npy(tmp / "images.npy", decoded.x)
        _write_npy(tmp / "labels.npy", decoded.y)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if images_dir.exists():  # an incomplete or foreign directory (we hold the lock): replace it
            shutil.rmtree(images_dir)
        os.rename(tmp, images_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _ensure_images(source: Source) -> tuple[Path, dict[str, Any], bool]:
    fingerprint = source.fingerprint()
    key = images_key(source, fingerprint)
    images_dir = source.cache_dir / f"{source.name}-{key}"
    meta = _read_meta(images_dir, key)
    if meta is not None:
        return images_dir, meta, True
    try:
        source.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create data.cache_dir {source.cache_dir}: {exc}") from exc
    with _locked(source.cache_dir / ".locks" / f"{images_dir.name}.lock"):
        meta = _read_meta(images_dir, key)  # another process may have finished while we waited
        if meta is not None:
            return images_dir, meta, True
        for leftover in source.cache_dir.glob(f".tmp-{images_dir.name}-*"):  # from a killed process
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            return images_dir, _build_images(source, fingerprint, key, images_dir), False
        except OSError as exc:  # disk full, permissions: the temp directory is already gone
            raise DataError(f"cannot write the dataset cache in {source.cache_dir}: {exc}") from exc


# --- split ---------------------------------------------------------------------------------------

def stratified_split(y: np.ndarray, test_fraction: float, val_fraction: float, seed: int,
                     classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/val/test indices (sorted): test = ``test_fraction`` of all, val = ``val_fraction``
    of the rest. Deterministic in ``seed`` (through ``rng(seed, "split")``)."""
    from sklearn.model_selection import train_test_split  # heavy import, only when a split is computed

    generator = rng(seed, "split")
    states = [int(s) for s in generator.integers(0, 2**31 - 1, size=2)]
    indices = np.arange(len(y), dtype=np.int64)
    names = classes or [str(c) for c in range(int(y.max()) + 1)]

    def split(part: str, idx: np.ndarray, fraction: float, state: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return train_test_split(idx, test_size=fraction, stratify=y[idx], random_state=state)
        except ValueError as exc:  # too few images for a stratified split: say which class / fraction
            counts = np.bincount(y[idx], minlength=len(names))
            smallest = int(np.argmin(counts))
            raise DataError(
                f"cannot make a stratified {part} split of {len(idx)} images in {len(names)} classes "
                f"(data.test_fraction={test_fraction:g}, data.val_fraction={val_fraction:g}; smallest class "
                f"{names[smallest]!r} has {counts[smallest]} image(s)): {exc}"
            ) from exc

    rest, test = split("test", indices, test_fraction, states[0])
    if val_fraction > 0:
        train, val = split("validation", rest, val_fraction, states[1])
    else:
        train, val = rest, np.empty(0, dtype=np.int64)
    return tuple(np.sort(part).astype(np.int64) for part in (train, val, test))  # type: ignore[return-value]


def channel_stats(x: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``x[idx]`` in [0, 1] units, float32."""
    total = np.zeros(3, np.float64)
    total_sq = np.zeros(3, np.float64)
    for start in range(0, len(idx), _STATS_CHUNK):
        chunk = np.asarray(x[idx[start:start + _STATS_CHUNK]], dtype=np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        total_sq += np.square(chunk).sum(axis=(0, 1, 2))
    n = len(idx) * x.shape[1] * x.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)  # no divide-by-zero on flat data


def _split_file(images_dir: Path, seed: int, test_fraction: float, val_fraction: float) -> Path:
    return images_dir / f"split-seed{seed}-test{test_fraction:g}-val{val_fraction:g}.npz"


def _read_split(path: Path, pixels: str, seed: int, test_fraction: float, val_fraction: float) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            split = {name: stored[name] for name in ("train_idx", "val_idx", "test_idx", "mean", "std")}
            stored_hash = str(stored["split_hash"])
    except (OSError, ValueError, KeyError):
        return None
    if split_hash(pixels, test_fraction, val_fraction, seed, split["train_idx"], split["val_idx"],
                  split["test_idx"]) != stored_hash:
        return None  # damaged or from other pixels: recompute
    return split | {"split_hash": stored_hash}


def _ensure_split(images_dir: Path, pixels: str, x: np.ndarray, y: np.ndarray, classes: list[str], seed: int,
                  test_fraction: float, val_fraction: float) -> tuple[dict, Path, bool]:
    path = _split_file(images_dir, seed, test_fraction, val_fraction)
    split = _read_split(path, pixels, seed, test_fraction, val_fraction) if path.exists() else None
    if split is not None:
        return split, path, True
    train, val, test = stratified_split(np.asarray(y), test_fraction, val_fraction, seed, classes)
    mean, std = channel_stats(x, train)
    split = {"train_idx": train, "val_idx": val, "test_idx": test, "mean": mean, "std": std,
             "split_hash": split_hash(pixels, test_fraction, val_fraction, seed, train, val, test)}
    # Deterministic content: two processes racing here write identical files; os.replace keeps one.
    try:
        atomic_write(path, fsync=True, write=lambda handle: np.savez(handle, **{k: np.asarray(v) for k, v in split.items()}))
    except OSError as exc:
        raise DataError(f"cannot write the split file {path}: {exc}") from exc
    return split, path, False


# --- the entry point -----------------------------------------------------------------------------

def prepare(data_cfg: Mapping[str, Any], seed: int) -> PreparedDataset:
    """Build the source named by ``data_cfg['_target_']``, decode (cached per content), split (cached
    per seed), and return the arrays + provenance. Bad input raises ``DataError``."""
    started = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    source = build_source(data_cfg)
    images_dir, meta, images_hit = _ensure_images(source)
    x = np.load(images_dir / "images.npy", mmap_mode="r")
    y = np.load(images_dir / "labels.npy")
    split_seed = seed if source.split_seed is None else source.split_seed  # the fixed design: one split
    split, split_path, split_hit = _ensure_split(images_dir, meta["pixels_digest"], x, y, meta["classes"], split_seed,
                                                 source.test_fraction, source.val_fraction)
    return PreparedDataset(
        name=source.name, source=source.describe(), classes=list(meta["classes"]), x=x, y=y,
        train_idx=split["train_idx"], val_idx=split["val_idx"], test_idx=split["test_idx"],
        mean=np.asarray(split["mean"], np.float32), std=np.asarray(split["std"], np.float32),
        split_hash=split["split_hash"], cache_path=str(images_dir),
        prepare_seconds=time.perf_counter() - started, from_cache=images_hit and split_hit,
        skipped_files=list(meta["skipped_files"]), seed=seed, images_key=meta["images_key"],
        images_from_cache=images_hit, split_from_cache=split_hit, split_file=str(split_path),
        test_fraction=source.test_fraction, val_fraction=source.val_fraction, resample=meta["resample"],
        split_seed=split_seed,
    )

"""Data layer: sources, the content-keyed cache, seeded splits and batch plans, errors, the CLI.

Everything here is tiny (≤ 256 images of 16×16) except the slow test on the full EuroSAT zip.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runner
from runner.data import (DataError, PreparedDataset, apply_augment, dataset_card, epoch_batches, prepare,
                         resolve_config)
from runner.data import cache as data_cache
from runner.data.sources import EUROSAT_CLASSES

FULL_ZIP = runner.PROJECT_ROOT.parent / "shared" / "datasets" / "EuroSAT_RGB.zip"
EUROSAT_COUNTS = {"AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500,
                  "Industrial": 2500, "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000,
                  "River": 2500, "SeaLake": 3000}


# --- helpers -------------------------------------------------------------------------------------

def _picture(label: int, index: int, size: int = 16) -> np.ndarray:
    """A class-coloured picture with a per-index gradient, so every file has distinct content."""
    generator = np.random.default_rng(1000 * label + index)
    base = np.array([(label * 80) % 256, (label * 150 + 40) % 256, (255 - label * 60) % 256], np.float64)
    image = base + generator.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def make_folder(root: Path, per_class: dict[str, int], size: int = 16) -> Path:
    for label, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / name / f"{name}_{i}.png").write_bytes(_encode(_picture(label, i, size)))
    return root


def folder_cfg(path: Path, cache_dir: Path, **override) -> dict:
    cfg = {"_target_": "runner.data.sources.FolderSource", "name": "folder", "path": str(path),
           "image_size": 16, "test_fraction": 0.2, "val_fraction": 0.1, "on_corrupt": "error",
           "cache_dir": str(cache_dir)}
    return cfg | override


def synthetic_cfg(cache_dir: Path, **override) -> dict:
    cfg = {"_target_": "runner.data.sources.SyntheticSource", "name": "synthetic", "num_classes": 4,
           "samples_per_class": 40, "image_size": 16, "test_fraction": 0.2, "val_fraction": 0.1,
           "on_corrupt": "error", "cache_dir": str(cache_dir)}
    return cfg | override


def make_eurosat_zip(path: Path, per_class: int = 3, size: int = 16, layout_root: str = "EuroSAT_RGB",
                     classes=EUROSAT_CLASSES) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{layout_root}/", b"")
        for label, name in enumerate(classes):
            for i in range(per_class):
                archive.writestr(f"{layout_root}/{name}/{name}_{i + 1}.jpg", _encode(_picture(label, i, size), "JPEG"))
    return path


def cache_entries(cache_dir: Path) -> list[str]:
    """Everything in the cache except the lock files (which hold no data)."""
    if not cache_dir.exists():
        return []
    return sorted(p.name for p in cache_dir.iterdir() if p.name != ".locks")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


# --- cache reuse and invalidation ----------------------------------------------------------------

def test_second_call_is_served_from_cache(cache_dir):
    first = prepare(synthetic_cfg(cache_dir), seed=0)
    second = prepare(synthetic_cfg(cache_dir), seed=0)
    assert not first.from_cache and second.from_cache
    assert second.images_from_cache and second.split_from_cache
    assert isinstance(second.x, np.memmap)  # read from disk, not decoded again
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)
    assert first.split_hash == second.split_hash
    np.testing.assert_array_equal(first.mean, second.mean)


def test_seeds_share_one_image_cache(cache_dir):
    seeds = [prepare(synthetic_cfg(cache_dir), seed=s) for s in (0, 1, 2)]
    assert len({d.cache_path for d in seeds}) == 1
    images_dir = Path(seeds[0].cache_path)
    assert sorted(p.name for p in images_dir.glob("*.npy")) == ["images.npy", "labels.npy"]
    assert len(list(images_dir.glob("split-seed*.npz"))) == 3
    assert cache_entries(cache_dir) == [images_dir.name]


def test_changed_file_invalidates_the_cache(tmp_path, cache_dir):
    root = make_folder(tmp_path / "set", {"a": 10, "b": 10})
    before = prepare(folder_cfg(root, cache_dir), seed=0)
    new_pixels = np.full((16, 16, 3), 7, np.uint8)
    (root / "b" / "b_3.png").write_bytes(_encode(new_pixels))
    after = prepare(folder_cfg(root, cache_dir), seed=0)
    assert not after.images_from_cache
    assert after.images_key != before.images_key and after.split_hash != before.split_hash
    position = int(np.flatnonzero(after.y == 1)[3])  # files are read in sorted order: b_3 is b's 4th
    np.testing.assert_array_equal(after.x[position], new_pixels)
    (root / "b" / "b_new.png").write_bytes(_encode(new_pixels))  # an added file changes the key too
    assert prepare(folder_cfg(root, cache_dir), seed=0).images_key != after.images_key


def test_changed_parameter_invalidates_the_cache(cache_dir):
    base = prepare(synthetic_cfg(cache_dir), seed=0)
    resized = prepare(synthetic_cfg(cache_dir, image_size=24), seed=0)
    assert not resized.images_from_cache and resized.x.shape[1:] == (24, 24, 3)
    assert resized.images_key != base.images_key
    assert prepare(synthetic_cfg(cache_dir, on_corrupt="skip"), seed=0).images_key != base.images_key
    more = prepare(synthetic_cfg(cache_dir, samples_per_class=41), seed=0)
    assert more.images_key != base.images_key and len(more.y) == 4 * 41
    resplit = prepare(synthetic_cfg(cache_dir, test_fraction=0.3), seed=0)
    assert resplit.images_from_cache and not resplit.split_from_cache  # same images, new split
    assert resplit.split_hash != base.split_hash
    assert len(resplit.test_idx) == round(0.3 * len(resplit.y))


def test_damaged_split_file_is_recomputed(cache_dir):
    first = prepare(synthetic_cfg(cache_dir), seed=0)
    Path(first.split_file).write_bytes(b"not an npz")
    again = prepare(synthetic_cfg(cache_dir), seed=0)
    assert not again.split_from_cache and again.split_hash == first.split_hash


def test_failed_cache_write_leaves_nothing(cache_dir, monkeypatch):
    calls = []

    def failing_write(path, array):
        calls.append(path.name)
        if path.name == "labels.npy":
            raise OSError("disk full (simulated)")
        np.save(path, array)

    monkeypatch.setattr(data_cache, "_write_npy", failing_write)
    with pytest.raises(DataError, match=r"cannot write the dataset cache in .*disk full"):
        prepare(synthetic_cfg(cache_dir), seed=0)
    assert calls == ["images.npy", "labels.npy"]
    assert cache_entries(cache_dir) == []
    monkeypatch.undo()
    assert not prepare(synthetic_cfg(cache_dir), seed=0).from_cache  # and the next call builds it cleanly


def _prepare_images_in_child(cfg: dict, queue) -> None:
    # Only the decode/commit step (what the lock guards); skipping the split keeps sklearn's import out.
    images_dir, meta, hit = data_cache._ensure_images(data_cache.build_source(cfg))
    queue.put((meta["images_key"], str(images_dir), hit))


def test_concurrent_preparers_build_once(tmp_path, cache_dir):
    root = make_folder(tmp_path / "set", {"a": 30, "b": 30, "c": 30})
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_prepare_images_in_child, args=(folder_cfg(root, cache_dir), queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results[0][:2] == results[1][:2]
    assert sorted(hit for *_, hit in results) == [False, True]  # the lock: one decodes, the other reuses
    assert cache_entries(cache_dir) == [Path(results[0][1]).name]  # one images dir, no temp leftovers
    assert prepare(folder_cfg(root, cache_dir), seed=0).images_from_cache


# --- splits --------------------------------------------------------------------------------------

def test_splits_are_stratified_and_disjoint(cache_dir):
    ds = prepare(synthetic_cfg(cache_dir, num_classes=5, samples_per_class=40), seed=3)
    parts = [ds.train_idx, ds.val_idx, ds.test_idx]
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)) == len(ds.y) == 200  # disjoint and complete
    for idx in parts:
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(ds.y[ds.test_idx]), [8] * 5)  # 20 % of each class
    assert sorted(np.bincount(ds.y[ds.val_idx])) == [3, 3, 3, 3, 4]  # 10 % of the other 160, as even as can be
    train = np.asarray(ds.x[ds.train_idx], np.float64) / 255
    np.testing.assert_allclose(ds.mean, train.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(ds.std, train.std(axis=(0, 1, 2)), rtol=1e-4)
    assert ds.mean.dtype == ds.std.dtype == np.float32


def test_split_depends_on_seed_only(tmp_path):
    a = prepare(synthetic_cfg(tmp_path / "c1"), seed=5)
    b = prepare(synthetic_cfg(tmp_path / "c2"), seed=5)  # a fresh cache: same content ⇒ same split
    assert a.split_hash == b.split_hash
    for name in ("train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = prepare(synthetic_cfg(tmp_path / "c1"), seed=6)
    assert c.split_hash != a.split_hash and c.images_key == a.images_key
    assert not np.array_equal(c.test_idx, a.test_idx)


# --- batch plans and augmentation ----------------------------------------------------------------

ALL_ON = {"hflip": True, "vflip": True, "rot90": True}


def test_epoch_batches_are_seeded(cache_dir):
    ds = prepare(synthetic_cfg(cache_dir), seed=0)
    plan = epoch_batches(ds, seed=0, epoch=1, batch_size=32, augment_cfg=ALL_ON)
    again = epoch_batches(ds, seed=0, epoch=1, batch_size=32, augment_cfg=ALL_ON)
    for name in ("order", "hflip", "vflip", "rot90"):
        np.testing.assert_array_equal(getattr(plan, name), getattr(again, name))
    np.testing.assert_array_equal(np.sort(plan.order), ds.train_idx)  # a permutation of the train split
    assert plan.order.dtype == np.int64 and plan.hflip.dtype == bool and plan.rot90.dtype == np.int8
    assert plan.x is ds.x and plan.y is ds.y and plan.batch_size == 32
    np.testing.assert_array_equal(plan.mean, ds.mean)
    other_epoch = epoch_batches(ds, seed=0, epoch=2, batch_size=32, augment_cfg=ALL_ON)
    other_seed = epoch_batches(ds, seed=1, epoch=1, batch_size=32, augment_cfg=ALL_ON)
    for other in (other_epoch, other_seed):
        assert not np.array_equal(other.order, plan.order)
        assert not np.array_equal(other.rot90, plan.rot90)
    test_plan = epoch_batches(ds, seed=0, epoch=0, batch_size=8, augment_cfg=None, split="test")
    np.testing.assert_array_equal(np.sort(test_plan.order), ds.test_idx)
    with pytest.raises(DataError, match="split 'holdout'"):
        epoch_batches(ds, seed=0, epoch=0, batch_size=8, augment_cfg=None, split="holdout")
    with pytest.raises(DataError, match="batch_size"):
        epoch_batches(ds, seed=0, epoch=0, batch_size=0, augment_cfg=None)


def test_augment_draws_respect_the_config(cache_dir):
    ds = prepare(synthetic_cfg(cache_dir, samples_per_class=64), seed=0)
    n = len(ds.train_idx)
    off = epoch_batches(ds, 0, 0, 16, {"hflip": False, "vflip": False, "rot90": False})
    assert not off.hflip.any() and not off.vflip.any() and not off.rot90.any()
    none = epoch_batches(ds, 0, 0, 16, None)
    assert not none.hflip.any() and not none.rot90.any()
    np.testing.assert_array_equal(none.order, off.order)  # augmentation never changes the order
    on = epoch_batches(ds, 0, 0, 16, ALL_ON)
    assert 0.35 < on.hflip.mean() < 0.65 and 0.35 < on.vflip.mean() < 0.65
    assert set(np.unique(on.rot90)) == {0, 1, 2, 3} and len(on.rot90) == n
    only_h = epoch_batches(ds, 0, 0, 16, {"hflip": True, "vflip": False, "rot90": False})
    np.testing.assert_array_equal(only_h.hflip, on.hflip)  # switching others off keeps hflip's draws
    assert not only_h.vflip.any() and not only_h.rot90.any()
    with pytest.raises(DataError, match="shear"):
        epoch_batches(ds, 0, 0, 16, {"hflip": True, "shear": True})
    with pytest.raises(DataError, match="train.augment.rot90"):
        epoch_batches(ds, 0, 0, 16, {"rot90": "yes"})


def test_apply_augment_semantics():
    image = np.array([[0, 1], [2, 3]], np.uint8)[None, :, :, None]  # (1, 2, 2, 1): rows [0 1] / [2 3]
    def one(h, v, k):
        return apply_augment(image, [h], [v], [k])[0, :, :, 0].tolist()
    assert one(False, False, 0) == [[0, 1], [2, 3]]
    assert one(True, False, 0) == [[1, 0], [3, 2]]  # mirror left-right
    assert one(False, True, 0) == [[2, 3], [0, 1]]  # mirror top-bottom
    assert one(False, False, 1) == [[1, 3], [0, 2]]  # a quarter turn counter-clockwise
    assert one(False, False, 2) == [[3, 2], [1, 0]]
    assert one(False, False, 3) == [[2, 0], [3, 1]]
    assert one(True, False, 1) == [[0, 2], [1, 3]]  # hflip first, then the turn
    assert one(True, True, 0) == one(False, False, 2)
    batch = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    original = batch.copy()
    out = apply_augment(batch, [True, False, False], [False, True, False], [0, 0, 3])
    np.testing.assert_array_equal(batch, original)  # input untouched
    np.testing.assert_array_equal(out[0], original[0, :, ::-1])
    np.testing.assert_array_equal(out[1], original[1, ::-1])
    np.testing.assert_array_equal(out[2], np.rot90(original[2], 3))
    with pytest.raises(ValueError, match="rot90"):
        apply_augment(batch, [False] * 3, [False] * 3, [0, 4, 0])


# --- sources -------------------------------------------------------------------------------------

def test_folder_reads_mixed_formats_and_resizes(tmp_path, cache_dir):
    root = tmp_path / "mixed"
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    exact = _picture(0, 0, 16)
    (root / "cats" / "a.png").write_bytes(_encode(exact))
    (root / "cats" / "b.JPG").write_bytes(_encode(_picture(0, 1, 40), "JPEG"))
    (root / "cats" / "c.tif").write_bytes(_encode(_picture(0, 2, 20), "TIFF"))
    (root / "cats" / "notes.txt").write_text("not an image, ignored")
    (root / "cats" / ".hidden.png").write_bytes(b"ignored")
    gray = Image.fromarray(np.full((10, 30), 200, np.uint8), mode="L")
    gray.save(root / "dogs" / "gray_wide.png")
    Image.fromarray(np.zeros((16, 16, 4), np.uint8), mode="RGBA").save(root / "dogs" / "nested" / "rgba.png")
    (root / "README.md").write_text("top-level files are not classes")
    ds = prepare(folder_cfg(root, cache_dir, test_fraction=0.4, val_fraction=0.0), seed=0)
    assert ds.classes == ["cats", "dogs"] and ds.x.shape == (5, 16, 16, 3) and ds.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds.x[0], exact)  # already 16×16: not resampled
    assert np.all(ds.x[3] == 200)  # grayscale → RGB
    assert len(ds.val_idx) == 0


def test_synthetic_data_is_learnable(cache_dir):
    ds = prepare(synthetic_cfg(cache_dir, samples_per_class=64), seed=0)
    features = np.asarray(ds.x, np.float64).reshape(len(ds.y), -1) / 255
    centroids = np.stack([features[ds.train_idx][ds.y[ds.train_idx] == c].mean(0) for c in range(ds.num_classes)])
    test = features[ds.test_idx]
    predicted = np.argmin(((test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float(np.mean(predicted == ds.y[ds.test_idx]))
    assert accuracy >= 0.8, accuracy  # chance is 0.25
    assert len(np.unique(features.round(6), axis=0)) == len(ds.y)  # no duplicate pictures


def test_eurosat_zip_and_extracted_folder_agree(tmp_path, cache_dir):
    archive = make_eurosat_zip(tmp_path / "EuroSAT_RGB.zip", per_class=5)
    cfg = {"_target_": "runner.data.sources.EuroSATSource", "name": "eurosat", "image_size": 16,
           "test_fraction": 0.2, "val_fraction": 0.25, "on_corrupt": "error", "cache_dir": str(cache_dir)}
    from_zip = prepare(cfg | {"path": str(archive)}, seed=0)
    assert from_zip.classes == list(EUROSAT_CLASSES) and len(from_zip.y) == 50
    assert "zip" in from_zip.source
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "extracted")
    from_folder = prepare(cfg | {"path": str(tmp_path / "extracted")}, seed=0)  # the parent of EuroSAT_RGB/
    np.testing.assert_array_equal(from_folder.x, from_zip.x)
    assert from_folder.images_key != from_zip.images_key  # different containers, separately cached …
    assert from_folder.split_hash == from_zip.split_hash  # … but the same pixels and split: one hash
    # The zip's key comes from its central directory: a changed member changes it.
    make_eurosat_zip(tmp_path / "EuroSAT_RGB.zip", per_class=5, size=17)
    assert prepare(cfg | {"path": str(archive)}, seed=0).images_key != from_zip.images_key


def test_on_corrupt_skip_counts_and_reports(tmp_path, cache_dir):
    root = make_folder(tmp_path / "set", {"a": 10, "b": 10})
    (root / "a" / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = _encode(_picture(1, 99, 32), "JPEG")
    (root / "b" / "b_truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    ds = prepare(folder_cfg(root, cache_dir, on_corrupt="skip"), seed=0)
    assert ds.skipped_files == ["a/a_broken.png", "b/b_truncated.jpg"]
    assert len(ds.y) == 20
    card = dataset_card(ds)
    assert "2 unreadable file(s)" in card and "a/a_broken.png" in card
    assert prepare(folder_cfg(root, cache_dir, on_corrupt="skip"), seed=0).skipped_files == ds.skipped_files


# --- bad input -----------------------------------------------------------------------------------

def _missing(tmp):
    return folder_cfg(tmp / "nope", tmp / "cache"), "nope"


def _empty(tmp):
    (tmp / "empty").mkdir()
    return folder_cfg(tmp / "empty", tmp / "cache"), "empty"


def _flat(tmp):
    (tmp / "flat").mkdir()
    (tmp / "flat" / "x.png").write_bytes(_encode(_picture(0, 0)))
    return folder_cfg(tmp / "flat", tmp / "cache"), "no class folders"


def _one_class(tmp):
    return folder_cfg(make_folder(tmp / "one", {"lonely": 5}), tmp / "cache"), "'lonely'"


def _class_without_images(tmp):
    root = make_folder(tmp / "set", {"a": 5, "b": 5})
    (root / "c_empty").mkdir()
    (root / "c_empty" / "notes.txt").write_text("no pictures here")
    return folder_cfg(root, tmp / "cache"), "c_empty"


def _corrupt(tmp):
    root = make_folder(tmp / "set", {"a": 5, "b": 5})
    (root / "b" / "b_bad.jpg").write_bytes(b"\xff\xd8\xff definitely not a jpeg")
    return folder_cfg(root, tmp / "cache"), "b_bad.jpg"


def _all_corrupt_in_a_class_even_when_skipping(tmp):
    root = make_folder(tmp / "set", {"a": 5})
    (root / "b").mkdir()
    (root / "b" / "b_bad.png").write_bytes(b"junk")
    return folder_cfg(root, tmp / "cache", on_corrupt="skip"), "'b'"


def _zip_without_layout(tmp):
    path = make_eurosat_zip(tmp / "wrong.zip", layout_root="Pictures")
    return folder_cfg(path, tmp / "cache", _target_="runner.data.sources.EuroSATSource"), "Pictures/"


def _zip_missing_class(tmp):
    path = make_eurosat_zip(tmp / "nine.zip", classes=EUROSAT_CLASSES[:-1])
    return folder_cfg(path, tmp / "cache", _target_="runner.data.sources.EuroSATSource"), "SeaLake"


def _not_a_zip(tmp):
    (tmp / "fake.zip").write_bytes(b"PK but not really")
    return folder_cfg(tmp / "fake.zip", tmp / "cache", _target_="runner.data.sources.EuroSATSource"), "fake.zip"


def _corrupt_zip_member(tmp):
    path = tmp / "EuroSAT_RGB.zip"
    make_eurosat_zip(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("EuroSAT_RGB/Forest/Forest_99.jpg", b"not a jpeg")
    return folder_cfg(path, tmp / "cache", _target_="runner.data.sources.EuroSATSource"), "Forest_99.jpg"


def _image_size_too_small(tmp):
    return folder_cfg(make_folder(tmp / "set", {"a": 5, "b": 5}), tmp / "cache", image_size=4), "image_size"


def _image_size_not_an_int(tmp):
    return synthetic_cfg(tmp / "cache", image_size="large"), "image_size"  # ("64" is read as 64, as Hydra does)


def _unknown_option(tmp):
    return synthetic_cfg(tmp / "cache", colour_mode="hsv"), "colour_mode"


def _path_not_set(tmp):
    return folder_cfg("???", tmp / "cache"), "data.path"


def _bad_on_corrupt(tmp):
    return synthetic_cfg(tmp / "cache", on_corrupt="ignore"), "on_corrupt"


def _bad_target(tmp):
    return synthetic_cfg(tmp / "cache", _target_="os.path.join"), "os.path.join"


def _too_few_to_stratify(tmp):
    return folder_cfg(make_folder(tmp / "set", {"a": 2, "tiny": 1}), tmp / "cache"), "'tiny'"


@pytest.mark.parametrize("case", [
    _missing, _empty, _flat, _one_class, _class_without_images, _corrupt, _all_corrupt_in_a_class_even_when_skipping,
    _zip_without_layout, _zip_missing_class, _not_a_zip, _corrupt_zip_member, _image_size_too_small,
    _image_size_not_an_int, _unknown_option, _path_not_set, _bad_on_corrupt, _bad_target, _too_few_to_stratify,
], ids=lambda f: f.__name__.strip("_"))
def test_bad_input_names_the_culprit_and_leaves_no_cache(tmp_path, case):
    cfg, culprit = case(tmp_path)
    with pytest.raises(DataError) as info:
        prepare(cfg, seed=0)
    message = str(info.value)
    assert culprit in message and "\n" not in message
    leftovers = [p for p in cache_entries(tmp_path / "cache")
                 if not (_too_few_to_stratify is case and p.startswith("folder-"))]  # images are fine there
    assert leftovers == []
    if case is _too_few_to_stratify:  # decoding succeeded; only the split was impossible: no split file
        assert not list((tmp_path / "cache").glob("*/split-*"))


def test_resolve_config_makes_paths_absolute_for_actors(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    make_folder(tmp_path / "set", {"a": 5, "b": 5})
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"data": folder_cfg(Path("set"), Path("rel-cache"), test_fraction=0.4, val_fraction=0.0)})
    plain = resolve_config(cfg.data)  # in the "driver", whose cwd is tmp_path
    assert isinstance(plain, dict) and plain["path"] == str(tmp_path / "set")
    assert plain["cache_dir"] == str(tmp_path / "rel-cache")
    monkeypatch.chdir(tmp_path / "set")  # an "actor" elsewhere
    ds = prepare(plain, seed=0)
    assert Path(ds.cache_path).parent == tmp_path / "rel-cache"
    assert isinstance(ds, PreparedDataset) and ds.num_classes == 2 and ds.image_size == 16
    with pytest.raises(DataError, match="data.path is required"):
        resolve_config(OmegaConf.create({"data": folder_cfg("???", tmp_path)}).data)


# --- CLI -----------------------------------------------------------------------------------------

def _cli(*overrides: str) -> subprocess.CompletedProcess:
    # The venv's interpreter (what `uv run python` runs); the cache dir comes from KVP_CACHE_DIR (conftest).
    return subprocess.run([sys.executable, "-m", "runner.data", *overrides], cwd=runner.PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_cli_prints_the_dataset_card(tmp_path):
    first = _cli("data=synthetic", f"data.cache_dir={tmp_path}", "seed=4")
    assert first.returncode == 0, first.stderr
    card = first.stdout
    for expected in ("Dataset card: synthetic", "classes        4: 0_disc, 1_square, 2_ring, 3_cross",
                     "256 × 16×16×3 uint8", "split hash", str(tmp_path), "from cache     no", "seed 4"):
        assert expected in card, expected
    assert "  total  " in card and " 256" in card.splitlines()[-1]
    second = _cli("data=synthetic", f"data.cache_dir={tmp_path}", "seed=4")
    assert "from cache     yes" in second.stdout


@pytest.mark.parametrize("overrides, culprit", [
    (("data=folder", "data.path=/nonexistent/kvp-images"), "/nonexistent/kvp-images"),
    (("data=eurosat",), "data.path"),
    (("data=no_such_dataset",), "no_such_dataset"),
])
def test_cli_errors_exit_2_with_one_line(overrides, culprit):
    result = _cli(*overrides)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], result.stderr
    assert result.stdout == ""


# --- the full dataset ----------------------------------------------------------------------------

@pytest.mark.slow  # decodes 27,000 JPEGs (~15 s) and writes a 330 MB cache
@pytest.mark.skipif(not FULL_ZIP.is_file(), reason=f"full EuroSAT zip not present at {FULL_ZIP}")
def test_full_eurosat_zip(tmp_path):
    cfg = {"_target_": "runner.data.sources.EuroSATSource", "name": "eurosat", "path": str(FULL_ZIP),
           "image_size": 64, "test_fraction": 0.2, "val_fraction": 0.1, "on_corrupt": "error",
           "cache_dir": str(tmp_path)}
    ds = prepare(cfg, seed=0)
    assert ds.x.shape == (27_000, 64, 64, 3) and ds.skipped_files == []
    assert dict(zip(ds.classes, np.bincount(ds.y).tolist())) == EUROSAT_COUNTS
    assert (len(ds.train_idx), len(ds.val_idx), len(ds.test_idx)) == (19_440, 2_160, 5_400)
    again = prepare(cfg, seed=0)
    assert again.from_cache and again.split_hash == ds.split_hash and again.prepare_seconds < 5
    # The embedded subset is the same JPEG bytes: its pixels equal the full set's.
    mini_root = runner.PROJECT_ROOT / "data" / "eurosat_mini"
    with zipfile.ZipFile(FULL_ZIP) as archive:
        members = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
    position = {name: i for i, name in enumerate(
        sorted(members, key=lambda n: (ds.classes.index(n.split("/")[1]), n)))}
    for path in sorted(mini_root.glob("*/*.jpg"))[::97]:
        full_index = position[f"EuroSAT_RGB/{path.parent.name}/{path.name}"]
        np.testing.assert_array_equal(ds.x[full_index], np.asarray(Image.open(path).convert("RGB")))

"""Image sources: where the pictures come from, how their content is fingerprinted, how they decode.

Over 400 lines on purpose: the three sources share one fingerprint/decode contract and read best side by side.

Each ``conf/data/*.yaml`` names one of these classes in ``_target_``; the remaining keys are the
constructor's keyword arguments (an unknown key is an error, not silently ignored).

- ``FolderSource``  any ``<path>/<class>/<image>`` tree (JPEG/PNG/TIFF/BMP/WebP via Pillow), ≥ 2 classes.
- ``EuroSATSource`` the EuroSAT RGB zip (read in place) or its extracted folder; layout validated.
- ``SyntheticSource`` generated, learnable images (class = colour + shape, plus noise) for fast tests.

A source only lists, fingerprints and decodes; caching and splitting live in ``runner.data.cache``.
"""
from __future__ import annotations

import abc
import colorsys
import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import DataError
from core.seeding import rng

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Pillow's bilinear filter is area-aware when shrinking (its support grows with the scale), so it
# does not alias like a plain 2×2 bilinear sample would.
RESAMPLE = "bilinear"
_RESAMPLE_FILTER = Image.Resampling.BILINEAR

EUROSAT_CLASSES = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
EUROSAT_ROOT = "EuroSAT_RGB"


@dataclass
class DecodedImages:
    """What ``Source.load`` returns: all images at ``image_size``, their labels, and what was skipped."""

    x: np.ndarray  # uint8 (N, S, S, 3)
    y: np.ndarray  # int64 (N,)
    classes: list[str]
    skipped_files: list[str] = field(default_factory=list)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not _is_hidden(os.path.basename(name))


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """Decode one encoded image to uint8 RGB ``(S, S, 3)``; resize only when not already S×S.

    Non-square images are resized to S×S (aspect ratio not kept, nothing cropped).
    Raises whatever Pillow raises for unreadable bytes; the caller names the file.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decode now: a truncated file fails here, not later
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), _RESAMPLE_FILTER)
        array = np.asarray(rgb, dtype=np.uint8)
    if array.shape != (image_size, image_size, 3):  # pragma: no cover - Pillow guarantees this for RGB
        raise ValueError(f"decoded to shape {array.shape}")
    return array


def _check_path(option: str, value: Any) -> Path:
    if value is None or value == "???" or (isinstance(value, str) and not value.strip()):
        raise DataError(f"data.{option} is required (e.g. data.{option}=<dir or file>)")
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"data.{option} must be a path, got {value!r}")
    # Absolute from here on: a Ray actor may run in another working directory.
    return Path(value).expanduser().resolve()


class Source(abc.ABC):
    """Options shared by every source: the keys every ``conf/data/*.yaml`` has."""

    def __init__(self, *, name: str, image_size: int, cache_dir: str, test_fraction: float = 0.2,
                 val_fraction: float = 0.1, on_corrupt: str = "error", split_seed: int | None = None) -> None:
        # Types and ranges were checked against the schema (core.config) by runner.data.build_source.
        self.name = name
        self.split_seed = None if split_seed is None else int(split_seed)  # None: the cell's seed (resampled)
        self.image_size = int(image_size)
        self.test_fraction = float(test_fraction)
        self.val_fraction = float(val_fraction)
        self.on_corrupt = on_corrupt
        self.cache_dir = _check_path("cache_dir", cache_dir)

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the dataset card, e.g. ``folder /data/x (2,000 files)``."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able description of the content (validates the layout; decodes nothing)."""

    @abc.abstractmethod
    def load(self) -> DecodedImages:
        """Decode every image at ``image_size`` (the expensive part, run once per cache key)."""


class _EncodedImageSource(Source):
    """A source of encoded image files grouped by class; subclasses list and read the bytes."""

    def __init__(self, *, path: str, **common: Any) -> None:
        super().__init__(**common)
        self.path = _check_path("path", path)
        self._listing: tuple[list[str], list[tuple[int, str]]] | None = None

    @abc.abstractmethod
    def _list(self) -> tuple[list[str], list[tuple[int, str]]]:
        """(sorted class names, [(label, member name)] in a stable order); validates the layout."""

    @abc.abstractmethod
    def _iter_bytes(self, members: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Yield (member, bytes) — or (member, the exception) when the bytes cannot be read."""

    @abc.abstractmethod
    def _display(self, member: str) -> str:
        """How a member is named in an error message (a full path, or zip + member)."""

    def listing(self) -> tuple[list[str], list[tuple[int, str]]]:
        if self._listing is None:
            self._listing = self._list()
        return self._listing

    def load(self) -> DecodedImages:
        classes, entries = self.listing()
        size = self.image_size
        x = np.empty((len(entries), size, size, 3), dtype=np.uint8)
        y = np.empty(len(entries), dtype=np.int64)
        labels = {member: label for label, member in entries}
        kept = 0
        skipped: list[str] = []
        for member, data in self._iter_bytes([m for _, m in entries]):
            try:
                if isinstance(data, Exception):
                    raise data
                x[kept] = decode_image(data, size)
            except MemoryError:
                raise
            except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, …
                if self.on_corrupt == "error":
                    reason = ("not an image format Pillow recognises" if isinstance(exc, UnidentifiedImageError)
                              else f"{type(exc).__name__}: {exc}")
                    raise DataError(
                        f"cannot read image {self._display(member)}: {reason} "
                        "(fix or remove it, or set data.on_corrupt=skip)"
                    ) from exc
                skipped.append(member)
                continue
            y[kept] = labels[member]
            kept += 1
        x, y = x[:kept], y[:kept]
        counts = np.bincount(y, minlength=len(classes))
        empty = [classes[c] for c in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(
                f"class {empty[0]!r} of {self.path} has no readable image left after skipping "
                f"{len(skipped)} unreadable file(s)"
            )
        return DecodedImages(x=x, y=y, classes=list(classes), skipped_files=skipped)


def _scan_class_folders(root: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Classes = the non-hidden sub-folders of ``root``; images = their image files, recursively."""
    if not root.exists():
        raise DataError(f"data path does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"data path is not a folder: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    if not class_dirs:
        if any(_is_image_name(p.name) for p in root.iterdir() if p.is_file()):
            raise DataError(f"{root} holds images but no class folders; expected {root}/<class>/<image>")
        raise DataError(f"data folder is empty (no class folders): {root}")
    if len(class_dirs) < 2:
        raise DataError(
            f"{root} has only one class folder ({class_dirs[0].name!r}); a classification task needs >= 2"
        )
    classes = [p.name for p in class_dirs]
    entries: list[tuple[int, str]] = []
    for label, class_dir in enumerate(class_dirs):
        members = sorted(
            p.relative_to(root).as_posix()
            for p in class_dir.rglob("*")
            if p.is_file() and _is_image_name(p.name)
            and not any(_is_hidden(part) for part in p.relative_to(class_dir).parts)
        )
        if not members:
            raise DataError(
                f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        entries += [(label, m) for m in members]
    return classes, entries


class FolderSource(_EncodedImageSource):
    """``<path>/<class>/<image>``: each non-hidden sub-folder is a class (sorted by name = label order)."""

    def describe(self) -> str:
        _, entries = self.listing()
        return f"folder {self.path} ({len(entries):,} files)"

    @property
    def root(self) -> Path:
        """The folder whose sub-folders are the classes (members are relative to it)."""
        return self.path

    def _list(self) -> tuple[list[str], list[tuple[int, str]]]:
        return _scan_class_folders(self.root)

    def fingerprint(self) -> dict[str, Any]:
        # Names, sizes and every byte: any edited, added, removed or renamed image changes the key.
        classes, entries = self.listing()
        digest = hashlib.blake2b(digest_size=32)
        for label, member in entries:
            try:
                data = (self.root / member).read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read {self.root / member}: {exc.strerror or exc}") from exc
            digest.update(f"{label}\0{member}\0{len(data)}\0".encode())
            digest.update(data)
        return {"kind": "files", "classes": classes, "count": len(entries), "content": digest.hexdigest()}

    def _iter_bytes(self, members: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        for member in members:
            try:
                yield member, (self.root / member).read_bytes()
            except OSError as exc:
                yield member, exc

    def _display(self, member: str) -> str:
        return str(self.root / member)


class EuroSATSource(FolderSource):
    """EuroSAT RGB: ``path`` is ``EuroSAT_RGB.zip`` (read in place, no extraction) or the extracted
    folder (``…/EuroSAT_RGB`` or its parent). The zip must hold ``EuroSAT_RGB/<Class>/<image>.jpg``
    with exactly the 10 EuroSAT classes."""

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    @property
    def root(self) -> Path:
        nested = self.path / EUROSAT_ROOT
        return nested if nested.is_dir() else self.path

    def describe(self) -> str:
        _, entries = self.listing()
        kind = "zip" if self.is_zip else "folder"
        return f"EuroSAT RGB {kind} {self.path} ({len(entries):,} images)"

    def _check_classes(self, found: list[str], where: str) -> None:
        missing = sorted(set(EUROSAT_CLASSES) - set(found))
        unexpected = sorted(set(found) - set(EUROSAT_CLASSES))
        if missing or unexpected:
            parts = ([f"missing class folder(s) {missing}"] if missing else []) + (
                [f"unexpected folder(s) {unexpected}"] if unexpected else [])
            raise DataError(f"{where} is not EuroSAT RGB: {'; '.join(parts)}")

    def _list(self) -> tuple[list[str], list[tuple[int, str]]]:
        if not self.path.exists():
            raise DataError(f"data path does not exist: {self.path}")
        if not self.is_zip:
            classes, entries = _scan_class_folders(self.root)
            self._check_classes(classes, str(self.root))
            return classes, entries
        infos = self._zip_infos()
        by_class: dict[str, list[str]] = {}
        pattern = re.compile(rf"{EUROSAT_ROOT}/([^/]+)/([^/]+)")
        for info in infos.values():
            match = pattern.fullmatch(info.filename)
            if not match or not _is_image_name(info.filename):
                raise DataError(
                    f"zip {self.path} does not have the EuroSAT layout "
                    f"{EUROSAT_ROOT}/<Class>/<Class>_<n>.jpg: unexpected entry {info.filename!r}"
                )
            by_class.setdefault(match.group(1), []).append(info.filename)
        if not by_class:
            raise DataError(f"zip {self.path} holds no images under {EUROSAT_ROOT}/<Class>/")
        classes = sorted(by_class)
        self._check_classes(classes, f"zip {self.path}")
        entries = [(label, m) for label, c in enumerate(classes) for m in sorted(by_class[c])]
        return classes, entries

    def _zip_infos(self) -> dict[str, zipfile.ZipInfo]:
        """The zip's image entries from its central directory (directories, hidden and macOS files left out)."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot open {self.path} as a zip file: {exc}") from exc
        return {
            i.filename: i for i in infos
            if not i.is_dir() and not any(_is_hidden(part) for part in i.filename.split("/"))
        }

    def fingerprint(self) -> dict[str, Any]:
        if not self.is_zip:
            return super().fingerprint() | {"kind": "eurosat-files"}
        # The central directory's CRC-32s + sizes identify the content without reading 96 MB;
        # reading a member later checks its CRC, so a tampered byte still fails loudly.
        classes, entries = self.listing()
        infos = self._zip_infos()
        digest = hashlib.blake2b(digest_size=32)
        for label, member in entries:
            info = infos[member]
            digest.update(f"{label}\0{member}\0{info.file_size}\0{info.CRC:08x}\0".encode())
        return {"kind": "zip-crc32", "classes": classes, "count": len(entries), "content": digest.hexdigest()}

    def _iter_bytes(self, members: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        if not self.is_zip:
            yield from super()._iter_bytes(members)
            return
        with zipfile.ZipFile(self.path) as archive:
            for member in members:
                try:
                    yield member, archive.read(member)  # verifies the CRC-32
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    yield member, exc

    def _display(self, member: str) -> str:
        return f"{self.path}:{member}" if self.is_zip else super()._display(member)


# --- synthetic -----------------------------------------------------------------------------------

_SHAPES = ("disc", "square", "ring", "cross", "hbars", "vbars", "triangle", "diamond")
SYNTHETIC_VERSION = "1"  # bump when the generator changes, so old caches are not reused


def _shape_mask(shape: str, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        return dy ** 2 + dx ** 2 <= radius ** 2
    if shape == "square":
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    if shape == "ring":
        d = np.sqrt(dy ** 2 + dx ** 2)
        return (d <= radius) & (d >= radius * 0.55)
    if shape == "cross":
        w = radius * 0.35
        return ((np.abs(dy) <= w) & (np.abs(dx) <= radius)) | ((np.abs(dx) <= w) & (np.abs(dy) <= radius))
    if shape == "hbars":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius) & (np.floor((dy + radius) / (radius / 2)) % 2 == 0)
    if shape == "vbars":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius) & (np.floor((dx + radius) / (radius / 2)) % 2 == 0)
    if shape == "triangle":
        return (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= radius
    raise AssertionError(shape)  # pragma: no cover


class SyntheticSource(Source):
    """Generated images: class ``c`` is a shape (disc, square, ring, …) in hue ``c / num_classes`` at a
    random position and size on a random dull background, with colour jitter and pixel noise.
    Learnable (colour and shape both carry the class) but not trivially: no two images are equal.
    The pictures depend only on the options here (``generator_seed``), not on the split seed."""

    def __init__(self, *, num_classes: int = 4, samples_per_class: int = 64, generator_seed: int = 0,
                 noise: float = 0.08, **common: Any) -> None:
        super().__init__(**common)
        self.num_classes = int(num_classes)
        self.samples_per_class = int(samples_per_class)
        self.generator_seed = int(generator_seed)
        self.noise = float(noise)

    @property
    def classes(self) -> list[str]:
        return [f"{c}_{_SHAPES[c % len(_SHAPES)]}" for c in range(self.num_classes)]

    def describe(self) -> str:
        return (f"synthetic {self.num_classes} classes × {self.samples_per_class} images "
                f"(generator_seed {self.generator_seed}, noise {self.noise})")

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "synthetic", "version": SYNTHETIC_VERSION, "classes": self.classes,
                "count": self.num_classes * self.samples_per_class,
                "generator_seed": self.generator_seed, "noise": self.noise}

    def load(self) -> DecodedImages:
        size, per_class = self.image_size, self.samples_per_class
        generator = rng(self.generator_seed, "synthetic-images")
        x = np.empty((self.num_classes * per_class, size, size, 3), dtype=np.uint8)
        y = np.repeat(np.arange(self.num_classes, dtype=np.int64), per_class)
        for i, label in enumerate(y):
            hue = label / self.num_classes
            colour = np.array(colorsys.hsv_to_rgb(hue, 0.85, 0.9)) + generator.normal(0, 0.05, 3)
            background = generator.uniform(0.15, 0.45) + generator.normal(0, 0.04, 3)
            radius = generator.uniform(0.22, 0.34) * size
            cy, cx = generator.uniform(radius, size - radius, 2)
            mask = _shape_mask(_SHAPES[label % len(_SHAPES)], size, cy, cx, radius)[..., None]
            image = np.where(mask, colour, background) + generator.normal(0, self.noise, (size, size, 3))
            x[i] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        return DecodedImages(x=x, y=y, classes=self.classes)

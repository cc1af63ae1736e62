"""Shared pytest set-up. Area-specific fixtures live in the area's own test files."""
from __future__ import annotations

import os
import shutil

import pytest

# Keep every test's dataset cache out of the checkout and away from a user's cache.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KVP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dataset-cache"))


def gpu_available() -> bool:
    return shutil.which("nvidia-smi") is not None and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != ""


def pytest_collection_modifyitems(config, items):
    if not gpu_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible on this machine)")
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(skip)

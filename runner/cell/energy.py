"""Energy where the machine has a counter: NVML's total-energy counter on NVIDIA GPUs, RAPL on CPUs.

- **GPU** (``device_kind == gpu``): ``nvmlDeviceGetTotalEnergyConsumption`` — millijoules the GPU has used
  since the driver loaded (Volta and newer) — read through ``libnvidia-ml.so.1`` with ctypes (no Python
  package needed). The GPU is found by its UUID when Ray reported one (``gpu_uuid``), else NVML's index
  0 (stated in the note). The caller synchronises the device before each read, so a reading covers the
  work queued before it.
- **CPU**: RAPL through ``/sys/class/powercap/intel-rapl:<n>/energy_uj`` (package domains, summed;
  wrap-around at ``max_energy_range_uj`` handled). RAPL measures the whole package — every process on
  the socket, not only the cell — which the note says.
- Otherwise (this development machine has no powercap and no GPU): ``None`` and the reason, and the
  report says "not measured: <why>".

``EnergyMeter.read()`` returns joules since the meter was made; the cell reads it at each epoch
boundary (training time only, as ``train_seconds``), so joules to the target epoch and per training
image follow from the same clock as the times.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Callable

POWERCAP = "/sys/class/powercap"


class _Nvml:
    """The three NVML calls the meter needs; ``OSError``/``RuntimeError`` when NVML is absent or refuses."""

    def __init__(self, uuid: str | None) -> None:
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        self._check(self.lib.nvmlInit_v2(), "nvmlInit_v2")
        self.handle = ctypes.c_void_p()
        if uuid:
            self._check(self.lib.nvmlDeviceGetHandleByUUID(uuid.encode(), ctypes.byref(self.handle)),
                        "nvmlDeviceGetHandleByUUID")
        else:
            self._check(self.lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(self.handle)),
                        "nvmlDeviceGetHandleByIndex_v2")

    @staticmethod
    def _check(code: int, call: str) -> None:
        if code != 0:
            raise RuntimeError(f"{call} returned NVML error {code}")

    def millijoules(self) -> int:
        value = ctypes.c_ulonglong()
        self._check(self.lib.nvmlDeviceGetTotalEnergyConsumption(self.handle, ctypes.byref(value)),
                    "nvmlDeviceGetTotalEnergyConsumption")
        return int(value.value)


def _rapl_domains(root: str = POWERCAP) -> list[str]:
    """Package-level RAPL domains (``intel-rapl:0``, ``intel-rapl:1`` …; sub-domains like ``:0:0`` left out)."""
    return sorted(d for d in glob.glob(os.path.join(root, "intel-rapl:*")) if d.count(":") == 1)


class EnergyMeter:
    """Joules since it was made, from the counter of the cell's device; ``available`` False with ``note``."""

    def __init__(self, device_kind: str | None, gpu_uuid: str | None = None, powercap: str = POWERCAP) -> None:
        self.available = False
        self._read: Callable[[], float] | None = None
        self.note = ""
        if device_kind == "gpu":
            self._init_nvml(gpu_uuid)
        else:
            self._init_rapl(powercap)
        if self.available:
            self._start = self._read()

    def _init_nvml(self, uuid: str | None) -> None:
        try:
            nvml = _Nvml(uuid)
            nvml.millijoules()
        except (OSError, RuntimeError, AttributeError) as exc:
            self.note = f"not measured: the GPU's NVML energy counter is unavailable ({exc})"
            return
        self._read = lambda: nvml.millijoules() / 1000.0
        self.available = True
        self.note = ("NVML total-energy counter of the cell's GPU" + (f" {uuid}" if uuid else " (NVML index 0)")
                     + ", device synchronised before each read")

    def _init_rapl(self, root: str) -> None:
        domains = _rapl_domains(root)
        if not domains:
            self.note = f"not measured: no energy counter on this machine (no RAPL domain in {root}, no NVIDIA GPU)"
            return
        try:
            files = [(open(os.path.join(d, "energy_uj")), int(open(os.path.join(d, "max_energy_range_uj")).read()))
                     for d in domains]
        except (OSError, ValueError) as exc:
            self.note = f"not measured: RAPL counters in {root} are not readable ({exc})"
            return
        last = [None] * len(files)
        total = [0.0]

        def read() -> float:
            for i, (fh, wrap) in enumerate(files):
                fh.seek(0)
                now = int(fh.read())
                if last[i] is not None:
                    total[0] += (now - last[i]) % wrap  # a counter that wrapped around
                last[i] = now
            return total[0] / 1e6

        self._read = read
        self.available = True
        self.note = (f"RAPL package energy ({len(domains)} domain(s), {root}): the whole package, every process "
                     "on it, not only this cell")

    def read(self) -> float | None:
        """Joules since the meter was made (``None`` without a counter)."""
        if not self.available or self._read is None:
            return None
        return self._read() - self._start

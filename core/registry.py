"""The one list of frameworks: name → adapter class, backend, package, display label.

Everything reads this table: the runner (which adapter to import), the configs' schema (which
names and backends exist), the analysis and report (order and labels), and the tests. To add a
framework: an adapter in ``frameworks/``, one row here, one ``conf/framework/<name>.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Framework:
    name: str  # the config option (conf/framework/<name>.yaml) and the `framework` column of the results
    adapter: str  # "module:Class", imported only inside the process that runs a cell
    backend: str  # what computes: tensorflow | torch | jax | numpy
    package: str  # the package whose version is the row's framework_version
    label: str  # how the report names it
    colour: str  # its colour in every plot (Okabe–Ito, colour-blind safe)
    real: bool = True  # False: the numpy stand-in for tests (no model spec, no equivalence gate)


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (
    Framework("keras", "frameworks.keras_adapter:KerasAdapter", "tensorflow", "keras", "Keras (TensorFlow)", "#0072B2"),
    Framework("pytorch", "frameworks.pytorch_adapter:PyTorchAdapter", "torch", "torch", "PyTorch", "#D55E00"),
    Framework("keras_jax", "frameworks.keras_adapter:KerasAdapter", "jax", "keras", "Keras (JAX)", "#009E73"),
    Framework("keras_torch", "frameworks.keras_adapter:KerasAdapter", "torch", "keras", "Keras (torch)", "#CC79A7"),
    Framework("fake", "frameworks.fake_adapter:FakeAdapter", "numpy", "fake", "fake (numpy stand-in)", "#E69F00",
              real=False),
    # A second stand-in (the same adapter), so test sweeps form pairs without a deep-learning import.
    Framework("fake_twin", "frameworks.fake_adapter:FakeAdapter", "numpy", "fake", "fake twin (numpy stand-in)",
              "#56B4E9", real=False),
)}

#: Display order in tables and plots (the registry's order).
FRAMEWORK_ORDER: tuple[str, ...] = tuple(FRAMEWORKS)
REAL_FRAMEWORKS: tuple[str, ...] = tuple(n for n, f in FRAMEWORKS.items() if f.real)


def framework(name: str) -> Framework:
    """The registry row of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; choose one of {list(FRAMEWORKS)}") from None

"""The one list of frameworks: name → adapter class, backend, package, display label, and what the
report says of it.

Everything framework-specific outside an adapter is derived from this table: the runner (which
adapter to import), the configs' schema and ``+sweep=frameworks`` (which names exist), the analysis
and report (order, labels, colours, the developer-experience table), and the tests (the layer test's
set of deep-learning modules, the GPU test list). Adding a framework = an adapter module in
``frameworks/``, one row here, one ``conf/framework/<name>.yaml`` (and its dependency in pyproject).

The deployment formats (``DEPLOY_FORMATS``) are the second table: which serving runtime loads each format in a
fresh process, its role, and the modules its exporters and runtime import (with the frameworks' own, what only
``frameworks/`` may import: ``FRAMEWORK_ONLY_MODULES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

#: The developer-experience table's aspects (report), in order: key → heading.
DX_ASPECTS: dict[str, str] = {
    "api": "API level", "model-definition": "Model definition", "data-pipeline": "Data loading",
    "training-loop": "Training loop", "debugging": "Debugging", "ecosystem": "Ecosystem & deployment",
}

_KERAS_NOTES = {
    "api": "High level: Model + compile/fit/evaluate/predict, callbacks for hooks; one code base runs on the "
           "TensorFlow, JAX or PyTorch backend.",
    "model-definition": "Sequential/functional API; input shapes inferred; channels-last (NHWC) by default.",
    "data-pipeline": "tf.data on the TensorFlow backend, keras.utils.PyDataset elsewhere; NumPy arrays accepted directly.",
    "training-loop": "fit owns the loop; custom steps by overriding train_step.",
    "debugging": "fit traces/compiles the step by default (XLA auto-jit on TensorFlow); run_eagerly=True for "
                 "step-through debugging.",
    "ecosystem": "SavedModel → TF Serving / LiteRT on the TensorFlow backend, model.export; pretrained models in KerasHub.",
}
_PYTORCH_NOTES = {
    "api": "Lower level: nn.Module + a loop you write; high-level trainers (Lightning, Ignite, …) are separate packages.",
    "model-definition": "nn.Module/nn.Sequential; input channels stated per layer (or Lazy modules); channels-first (NCHW).",
    "data-pipeline": "Dataset + DataLoader (workers, pinned memory); torchvision transforms.",
    "training-loop": "Written by hand: forward, loss, backward, step, zero_grad — full control, more code.",
    "debugging": "Eager by default: pdb and prints work inside the step; torch.compile is opt-in.",
    "ecosystem": "torch.export / ONNX, ExecuTorch for mobile; most research code and pretrained weights "
                 "(Hugging Face, timm, torchvision).",
}


@dataclass(frozen=True)
class Framework:
    name: str  # the config option (conf/framework/<name>.yaml) and the `framework` column of the results
    adapter: str  # "module:Class", imported only inside the process that runs a cell
    backend: str  # what computes: tensorflow | torch | jax | numpy
    package: str  # the package whose version is the row's framework_version
    label: str  # how the report names it
    colour: str  # its colour in every plot (Okabe–Ito, colour-blind safe)
    real: bool = True  # False: a numpy stand-in for tests (builds no model spec; the equivalence gate skips it)
    #: Top-level modules its adapter imports: they may be imported only inside frameworks/ (tests/test_layers.py).
    imports: tuple[str, ...] = ()
    #: What the report's developer-experience table says of it, per aspect of ``DX_ASPECTS`` (measured
    #: evidence is added by the report); an aspect without a note shows only the measurement.
    notes: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def adapter_file(self) -> str:
        """The adapter's source file relative to the checkout (``frameworks/pytorch_adapter.py``)."""
        return self.adapter.split(":")[0].replace(".", "/") + ".py"


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (
    Framework("keras", "frameworks.keras_adapter:KerasAdapter", "tensorflow", "keras", "Keras (TensorFlow)", "#0072B2",
              imports=("keras", "tensorflow"), notes=_KERAS_NOTES),
    Framework("pytorch", "frameworks.pytorch_adapter:PyTorchAdapter", "torch", "torch", "PyTorch", "#D55E00",
              imports=("torch", "torchvision"), notes=_PYTORCH_NOTES),
    Framework("keras_jax", "frameworks.keras_adapter:KerasAdapter", "jax", "keras", "Keras (JAX)", "#009E73",
              imports=("keras", "jax", "jaxlib"), notes=_KERAS_NOTES),
    Framework("keras_torch", "frameworks.keras_adapter:KerasAdapter", "torch", "keras", "Keras (torch)", "#CC79A7",
              imports=("keras", "torch"), notes=_KERAS_NOTES),
    Framework("fake", "frameworks.fake_adapter:FakeAdapter", "numpy", "fake", "fake (numpy stand-in)", "#E69F00",
              real=False),
    # A second stand-in (the same adapter), so test sweeps form pairs without a deep-learning import.
    Framework("fake_twin", "frameworks.fake_adapter:FakeAdapter", "numpy", "fake", "fake twin (numpy stand-in)",
              "#56B4E9", real=False),
    # New frameworks: one row above this line.
)}

# ---- deployment formats ------------------------------------------------------------------------
#: How a format serves (the ``role`` column of deployments): ``native`` = the framework's own serving format,
#: ``common`` = one runtime for every framework (ONNX), ``mobile`` = an on-device format.
DEPLOY_ROLES = ("native", "common", "mobile")


@dataclass(frozen=True)
class DeployFormat:
    """One deployment format: what an adapter's ``export`` writes and which runtime loads it in a fresh
    process (``frameworks.serving``). Which frameworks produce it is each adapter's ``deploy_formats()``."""

    name: str  # the `format` column of deployments.parquet
    label: str  # how the report names it
    runtime: str  # the `runtime` column: the serving runtime (a module of frameworks.serving)
    runtime_label: str
    role: str  # one of DEPLOY_ROLES
    #: Top-level modules its exporters and its runtime import beyond the frameworks' own: imported only inside
    #: frameworks/ (tests/test_layers.py), like ``Framework.imports``.
    imports: tuple[str, ...] = ()
    real: bool = True  # False: the numpy stand-in's format (tests)


DEPLOY_FORMATS: dict[str, DeployFormat] = {f.name: f for f in (
    DeployFormat("tf_saved_model", "TF SavedModel", "tensorflow", "TensorFlow (tf.saved_model.load)", "native",
                 imports=("tensorflow",)),
    DeployFormat("torch_export", "ExportedProgram (torch.export, .pt2)", "torch", "PyTorch (torch.export.load)",
                 "native", imports=("torch",)),
    DeployFormat("onnx", "ONNX", "onnxruntime", "ONNX Runtime", "common",
                 imports=("onnx", "onnxruntime", "onnxscript", "tf2onnx", "jax2onnx")),
    DeployFormat("litert", "LiteRT (.tflite)", "litert", "LiteRT interpreter (ai-edge-litert)", "mobile",
                 imports=("ai_edge_litert",)),
    DeployFormat("npz", "numpy weights (.npz)", "numpy", "numpy", "native", real=False),
)}
#: Every module an exporter or a serving runtime imports that no adapter row lists: imported only inside
#: frameworks/, as ``FRAMEWORK_MODULES``.
DEPLOY_MODULES: frozenset[str] = frozenset(m for f in DEPLOY_FORMATS.values() for m in f.imports)


def deploy_format(name: str) -> DeployFormat:
    """The row of deployment format ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return DEPLOY_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown deployment format {name!r}; choose from {list(DEPLOY_FORMATS)}") from None


#: Display order in tables and plots (the registry's order).
FRAMEWORK_ORDER: tuple[str, ...] = tuple(FRAMEWORKS)
REAL_FRAMEWORKS: tuple[str, ...] = tuple(n for n, f in FRAMEWORKS.items() if f.real)
#: Every module an adapter imports (the deep-learning frameworks): imported only inside frameworks/.
FRAMEWORK_MODULES: frozenset[str] = frozenset(m for f in FRAMEWORKS.values() for m in f.imports)
#: Both: what no module outside frameworks/ may import (the driver, the analysis, core).
FRAMEWORK_ONLY_MODULES: frozenset[str] = FRAMEWORK_MODULES | DEPLOY_MODULES


def framework(name: str) -> Framework:
    """The registry row of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; choose one of {list(FRAMEWORKS)}") from None


def register_resolvers() -> None:
    """``${frameworks:real}`` — the real frameworks in registry order (``conf/sweep/frameworks.yaml``)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("frameworks"):
        OmegaConf.register_new_resolver(
            "frameworks", lambda which="real": list(REAL_FRAMEWORKS if which == "real" else FRAMEWORK_ORDER))


register_resolvers()

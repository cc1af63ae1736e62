"""Native PyTorch: an ``nn.Module`` built from the ModelSpec (NCHW), a hand-written training loop, and
two input pipelines over the shared epoch plan: ``device`` (images resident on the compute device,
whole-batch gather + normalise there) and ``native`` (a per-sample ``Dataset`` with torchvision v2
transforms in a ``DataLoader`` with workers, pinned memory and persistent workers).

(Over 400 lines on purpose: the whole PyTorch side — model, loop, both pipelines, inference — is one
adapter, as the Keras one is.)

Imported only inside the process that runs a PyTorch cell (never next to TensorFlow/JAX).
"""
from __future__ import annotations

import copy
import os
import platform
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from frameworks import pipeline as P
from core import spec as S
from core.config import ParityConfig, PipelineConfig, PyTorchFrameworkConfig, TrainConfig
from frameworks.base import Adapter, Artifact, Batches, EpochStats, check_plan
from frameworks.knobs import cpu_name, finish_knobs, single_value

# PyTorch's own defaults, used when a parity knob is None (parity=framework_defaults).
_TORCH_BN_MOMENTUM = 0.1
_TORCH_BN_EPSILON = 1e-5
_TORCH_ADAM_BETAS = (0.9, 0.999)
_TORCH_ADAM_EPSILON = 1e-8


# region: model-definition
def build_module(spec: S.ModelSpec, parity: ParityConfig) -> nn.Sequential:
    """The spec as an ``nn.Sequential`` whose named children carry the spec's layer names."""
    momentum = _TORCH_BN_MOMENTUM if parity.batchnorm_momentum is None else parity.batchnorm_momentum
    epsilon = _TORCH_BN_EPSILON if parity.batchnorm_epsilon is None else parity.batchnorm_epsilon
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, features = spec.input_shape[2], None
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, S.Conv2D):
            layers[layer.name] = nn.Conv2d(channels, layer.filters, layer.kernel_size, padding=layer.kernel_size // 2)
            channels = layer.filters
        elif isinstance(layer, S.ReLU):
            layers[f"relu_{i}"] = nn.ReLU()
        elif isinstance(layer, S.MaxPool2D):
            layers[f"pool_{i}"] = nn.MaxPool2d(layer.pool_size)
        elif isinstance(layer, S.BatchNorm):
            bn = nn.BatchNorm2d if features is None else nn.BatchNorm1d
            layers[layer.name] = bn(features or channels, eps=epsilon, momentum=momentum)
        elif isinstance(layer, S.GlobalAvgPool):
            layers[f"gap_{i}"] = nn.AdaptiveAvgPool2d(1)
            layers[f"flatten_{i}"] = nn.Flatten()
            features = channels
        elif isinstance(layer, S.Dense):
            layers[layer.name] = nn.Linear(features, layer.units)
            features = layer.units
        elif isinstance(layer, S.Dropout):
            layers[f"dropout_{i}"] = nn.Dropout(layer.rate)
        else:
            raise TypeError(f"{spec.name}: unsupported layer {layer!r}")
    return nn.Sequential(layers)
# endregion


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _layout(spec: S.ModelSpec):
    """(canonical key, torch state_dict key, canonical→torch, torch→canonical) for every weight of ``spec``."""
    for layer in spec.layers:
        if isinstance(layer, S.Conv2D):  # HWIO ↔ OIHW
            yield (f"{layer.name}.kernel", f"{layer.name}.weight",
                   lambda w: np.transpose(w, (3, 2, 0, 1)), lambda w: np.transpose(w, (2, 3, 1, 0)))
            yield f"{layer.name}.bias", f"{layer.name}.bias", _same, _same
        elif isinstance(layer, S.Dense):  # (in, out) ↔ (out, in)
            yield f"{layer.name}.kernel", f"{layer.name}.weight", np.transpose, np.transpose
            yield f"{layer.name}.bias", f"{layer.name}.bias", _same, _same
        elif isinstance(layer, S.BatchNorm):
            for torch_name, canon in (("weight", "gamma"), ("bias", "beta"),
                                      ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
                yield f"{layer.name}.{canon}", f"{layer.name}.{torch_name}", _same, _same


def port_weights(module: nn.Module, spec: S.ModelSpec, weights: dict[str, np.ndarray]) -> None:
    """Copy canonical (Keras-layout) weights in: conv HWIO → OIHW, dense (in, out) → (out, in)."""
    expected = spec.weight_shapes()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise KeyError(f"{spec.name}: weights missing {missing}")
    state = {torch_key: to_torch(weights[canon]) for canon, torch_key, to_torch, _ in _layout(spec)}
    with torch.no_grad():
        own = module.state_dict()
        for key, value in state.items():
            if tuple(own[key].shape) != value.shape:
                raise ValueError(f"{spec.name}: {key} has shape {tuple(own[key].shape)}, ported {value.shape}")
            own[key].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))


def read_weights(module: nn.Module, spec: S.ModelSpec) -> dict[str, np.ndarray]:
    state = {k: v.detach().float().cpu().numpy() for k, v in module.state_dict().items()}
    out = {canon: from_torch(state[torch_key]) for canon, torch_key, _, from_torch in _layout(spec)}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# region: data-pipeline
class DeviceData:
    """The prepared uint8 images on the compute device, once, as a bank of their eight dihedral
    orientations (``frameworks.pipeline``), in the model's memory format; batches are one row
    gather + one fused scale/shift, whole-batch torch ops with no host round trip."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, channels_last: bool, augmented: bool) -> None:
        from torchvision.transforms.v2 import functional as TVF

        self.key, self.n = P.images_key(x), len(x)
        _, self.height, self.width, self.channels = x.shape
        self.orientations = P.bank_orientations(self.height, self.width, augmented)
        self.channels_last = channels_last
        source = np.ascontiguousarray(x)
        if not source.flags.writeable:  # a read-only memmap of the cache: torch wants writable memory
            source = np.array(source)
        images = torch.from_numpy(source).to(device).permute(0, 3, 1, 2)  # NCHW view, uint8
        views = []
        for o in self.orientations:
            hflip, turns = P.ORIENTATIONS[o]
            view = TVF.horizontal_flip(images) if hflip else images
            views.append(torch.rot90(view, turns, dims=(2, 3)) if turns else view)
        # Rows in the layout the model reads: NHWC memory (= NCHW channels_last) or NCHW contiguous.
        bank = torch.cat([v.permute(0, 2, 3, 1) if channels_last else v for v in views]).contiguous()
        self.row_shape = tuple(bank.shape[1:])
        row_bytes = int(np.prod(self.row_shape))
        # A row gather of 8-byte words is ~10x faster than of single bytes on CPU (same bytes moved).
        self.bank = bank.view(len(bank), -1).view(torch.int64) if row_bytes % 8 == 0 else bank.view(len(bank), -1)
        self.y = torch.from_numpy(np.asarray(y, np.int64)).to(device)
        self.device = device

    def rows(self, batches: Batches) -> torch.Tensor:
        rows = P.bank_rows(batches.order, batches.hflip, batches.vflip, batches.rot90, self.n, self.orientations)
        return torch.from_numpy(rows).to(self.device)

    def affine(self, mean: np.ndarray, std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element scale/shift over a flattened row (a per-channel broadcast over an innermost
        dimension of 3 is slow on CPU; a full-length vector is one vectorised pass)."""
        scale, shift = P.normalisation_affine(mean, std)
        per_pixel = self.height * self.width
        if self.channels_last:  # row = H, W, C
            scale, shift = np.tile(scale, per_pixel), np.tile(shift, per_pixel)
        else:  # row = C, H, W
            scale, shift = np.repeat(scale, per_pixel), np.repeat(shift, per_pixel)
        return torch.from_numpy(scale).to(self.device), torch.from_numpy(shift).to(self.device)

    def to_model_input(self, rows_uint8: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """uint8 rows ``(B, row)`` → normalised float32 NCHW (channels_last memory when so laid out)."""
        images = torch.mul(rows_uint8.view(torch.uint8).view(len(rows_uint8), -1), scale).add_(shift)
        if self.channels_last:
            return images.view(-1, self.height, self.width, self.channels).permute(0, 3, 1, 2)
        return images.view(-1, self.channels, self.height, self.width)

    def batch(self, rows: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self.to_model_input(self.bank.index_select(0, rows), scale, shift)


class PlanSampler(torch.utils.data.Sampler):
    """Yields ``(image index, hflip, vflip, rot90)`` of the current epoch plan, in plan order.

    The sampler runs in the main process, so a DataLoader with persistent workers sees each new
    epoch's plan (the workers only receive the tuples)."""

    def __init__(self) -> None:
        self.plan: Batches | None = None

    def __len__(self) -> int:
        return 0 if self.plan is None else len(self.plan.order)

    def __iter__(self):
        p = self.plan
        return iter(zip(p.order.tolist(), p.hflip.tolist(), p.vflip.tolist(), (np.asarray(p.rot90) % 4).tolist()))


class SampleDataset(torch.utils.data.Dataset):
    """Per-sample map-style dataset (the DataLoader idiom): uint8 HWC → CHW, torchvision v2 flips,
    ``torch.rot90``, ``to_dtype(scale=True)`` and ``normalize``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        self.x, self.y = x, np.asarray(y, np.int64)
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, bool, bool, int]) -> tuple[torch.Tensor, int]:
        from torchvision.transforms.v2 import functional as TVF

        index, hflip, vflip, turns = item
        image = torch.from_numpy(np.array(self.x[index])).permute(2, 0, 1)
        if hflip:
            image = TVF.horizontal_flip(image)
        if vflip:
            image = TVF.vertical_flip(image)
        if turns:
            image = torch.rot90(image, turns, dims=(1, 2))
        image = TVF.normalize(TVF.to_dtype(image, torch.float32, scale=True), self.mean, self.std)
        return image.contiguous(), int(self.y[index])


def make_loader(batches: Batches, num_workers: int = 0, pin_memory: bool = False, prefetch: int = 2,
                persistent: bool = False) -> torch.utils.data.DataLoader:
    """The native loader over ``batches`` (a new plan can be swapped in via ``loader.sampler.plan``)."""
    sampler = PlanSampler()
    sampler.plan = batches
    return torch.utils.data.DataLoader(
        SampleDataset(batches.x, batches.y, batches.mean, batches.std), batch_size=batches.batch_size,
        sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=persistent and num_workers > 0, prefetch_factor=prefetch if num_workers > 0 else None)
# endregion


class PyTorchAdapter(Adapter):
    name = "pytorch"
    backend = "torch"
    bn_moving_variance_estimator = "unbiased"  # BN moving-variance update uses the unbiased (n/(n-1)) batch variance
    config_schema = PyTorchFrameworkConfig
    #: ``auto``: measured on the device before the first timed cell of a condition (``tunables``/``use``);
    #: before any measurement (e.g. the equivalence gate) channels_last on CUDA, contiguous NCHW on CPU.
    #: ``conf/framework/pytorch.yaml`` may force either.
    memory_format = "auto"
    MEMORY_FORMATS = ("contiguous", "channels_last")

    @classmethod
    def unsupported(cls, framework: str, execution: str, deterministic: bool, device: str) -> str | None:
        import shutil

        if execution == "compiled" and device == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
            return (f"{framework} execution=compiled is torch.compile (inductor), which needs a C++ compiler on CPU; "
                    "none is on PATH")
        return None

    def configure(self, options: PyTorchFrameworkConfig) -> None:
        self.memory_format = options.memory_format
        self._measured_format = None  # the runner measures (or reuses its measurement) per condition

    def tunables(self) -> dict[str, tuple[str, ...]]:
        return {"memory_format": self.MEMORY_FORMATS} if self.memory_format == "auto" else {}

    def use(self, knob: str, value: str) -> None:
        if knob != "memory_format" or value not in self.MEMORY_FORMATS:
            raise KeyError(f"pytorch: no tunable {knob}={value!r}; tunables: memory_format in {self.MEMORY_FORMATS}")
        self._measured_format = value

    def __init__(self, parity: ParityConfig, device: str = "auto", framework: str | None = None,
                 pipeline: PipelineConfig | None = None) -> None:
        super().__init__(parity, device, framework, pipeline)
        if parity.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        if parity.cpu_threads is not None:
            torch.set_num_threads(int(parity.cpu_threads))
            try:  # only settable before the first inter-op parallel work in this process
                torch.set_num_interop_threads(int(parity.cpu_threads))
            except RuntimeError:
                pass
        self.device = self._pick_device(device)
        self._apply_precision(parity.precision)
        torch.use_deterministic_algorithms(bool(parity.deterministic), warn_only=True)
        torch.backends.cudnn.deterministic = bool(parity.deterministic)
        # Not deterministic: let cuDNN autotune its convolution algorithms, as TensorFlow and XLA do by default.
        torch.backends.cudnn.benchmark = not parity.deterministic
        self.model: nn.Module | None = None
        self._measured_format: str | None = None  # the tuner's choice for memory_format=auto (``use``)
        self._device_data: DeviceData | None = None
        self._loaders: dict[tuple, torch.utils.data.DataLoader] = {}

    # ---- environment ------------------------------------------------------------------
    @staticmethod
    def _pick_device(request: str) -> torch.device:
        if request not in ("auto", "cpu", "gpu"):
            raise ValueError(f"device must be auto, cpu or gpu, got {request!r}")
        if request == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("device=gpu requested but torch sees no CUDA device")
        return torch.device("cuda" if request != "cpu" and torch.cuda.is_available() else "cpu")

    @staticmethod
    def _apply_precision(precision: str | None) -> None:
        if precision is None:
            return
        if precision not in ("fp32", "tf32", "mixed_bf16"):
            raise ValueError(f"precision must be fp32, tf32 or mixed_bf16, got {precision!r}")
        tf32 = precision == "tf32"  # mixed_bf16 keeps its fp32 parts in true fp32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.set_float32_matmul_precision("high" if tf32 else "highest")

    def versions(self) -> dict[str, str]:
        import torchvision

        from frameworks.versions import cudnn_text

        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "cuda": str(torch.version.cuda),
                "cudnn": str(cudnn_text(cudnn)), "numpy": np.__version__, "python": platform.python_version()}

    def device_info(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            index = torch.cuda.current_device()
            return {"device": f"cuda:{index}", "device_kind": "gpu", "device_name": torch.cuda.get_device_name(index)}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name()}

    @property
    def channels_last(self) -> bool:
        if self.memory_format not in ("auto", "channels_last", "contiguous"):
            raise ValueError(f"memory_format must be auto, channels_last or contiguous, got {self.memory_format!r}")
        if self.memory_format == "auto":
            if self._measured_format is not None:
                return self._measured_format == "channels_last"
            return self.device.type == "cuda"
        return self.memory_format == "channels_last"

    # ---- model ------------------------------------------------------------------------
    def build(self, spec: S.ModelSpec, train: TrainConfig, weights: dict[str, np.ndarray] | None,
              seed: int = 0) -> None:
        if train.optimizer.lower() != "adam":
            raise ValueError(f"optimizer {train.optimizer!r} is not supported (only adam)")
        torch.manual_seed(int(seed))  # native init and dropout masks
        self.spec, self.train_settings = spec, train
        self.model = build_module(spec, self.parity)
        self.weights_ported = weights is not None
        if weights is not None:
            port_weights(self.model, spec, weights)
        self.model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        p = self.parity
        betas = (_TORCH_ADAM_BETAS[0] if p.adam_beta_1 is None else p.adam_beta_1,
                 _TORCH_ADAM_BETAS[1] if p.adam_beta_2 is None else p.adam_beta_2)
        eps = _TORCH_ADAM_EPSILON if p.adam_epsilon is None else p.adam_epsilon
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train.learning_rate, betas=betas, eps=eps)
        reduction = _torch_reduction(p.loss_reduction)
        self.loss_fn = nn.BCEWithLogitsLoss(reduction=reduction) if spec.binary else nn.CrossEntropyLoss(reduction=reduction)
        self.compiled = p.execution == "compiled"
        self.run_model = torch.compile(self.model) if self.compiled else self.model

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("build() must be called first")
        return self.model

    def get_weights(self) -> dict[str, np.ndarray]:
        return read_weights(self._require_model(), self.spec)

    def param_counts(self) -> dict[str, int]:
        model = self._require_model()
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        moving = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
        return {"trainable": int(trainable), "total": int(trainable + moving)}

    def knobs(self) -> dict[str, Any]:
        model = self._require_model()
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        group = self.optimizer.param_groups[0]
        mixed = self.parity.precision == "mixed_bf16"
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels_last = conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last) \
            and not conv.weight.is_contiguous()
        compiled = self.run_model is not model  # the torch.compile wrapper, not the module itself
        workers = self.pipeline.workers
        return finish_knobs({
            "framework": self.name,
            "backend": self.backend,
            "parity_mode": self.parity.mode,
            "device": self.device_info()["device"],
            "batchnorm_layers": len(bns),
            "batchnorm_momentum": single_value([m.momentum for m in bns], "BatchNorm momentum"),
            "batchnorm_epsilon": single_value([m.eps for m in bns], "BatchNorm epsilon"),
            "optimizer": type(self.optimizer).__name__,
            "adam_beta_1": float(group["betas"][0]),
            "adam_beta_2": float(group["betas"][1]),
            "adam_epsilon": float(group["eps"]),
            "adam_epsilon_placement": "after_bias_correction",
            "learning_rate": float(group["lr"]),
            "weight_init": "ported" if self.weights_ported else "native:kaiming_uniform(a=sqrt5)+uniform_bias",
            "loss": type(self.loss_fn).__name__,
            "loss_reduction": _canonical_reduction(self.loss_fn.reduction),
            "loss_from_logits": True,  # BCEWithLogits / CrossEntropy both take raw logits
            "output_activation": "sigmoid" if self.spec.binary else "softmax",
            "precision": self.parity.precision,
            "compute_dtype": "bfloat16" if mixed else "float32",
            "matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "conv_tf32": bool(torch.backends.cudnn.allow_tf32),
            "execution": "compiled" if compiled else "default",
            "compile_detail": ("torch.compile(inductor)" if compiled else "eager")
                              + f", cudnn.benchmark={bool(torch.backends.cudnn.benchmark)}",
            "memory_format": "channels_last" if channels_last else "contiguous",
            "cpu_threads_intra_op": torch.get_num_threads(),
            "cpu_threads_inter_op": torch.get_num_interop_threads(),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
            "pipeline": self.pipeline.name,
            "data_pipeline": ("device-resident uint8 orientation bank, index_select + fused normalise"
                              if self.pipeline.name == "device" else
                              f"DataLoader(per-sample torchvision v2, num_workers={workers}, "
                              f"pin_memory={self.device.type == 'cuda'}, persistent_workers={workers > 0}, "
                              f"prefetch_factor={self.pipeline.prefetch if workers else None})"),
        })

    # ---- compute ----------------------------------------------------------------------
    def _autocast(self):
        if self.parity.precision == "mixed_bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _labels(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] > 0).long() if self.spec.binary else logits.argmax(dim=1)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.spec.binary:
            return self.loss_fn(logits[:, 0].float(), y.float())
        return self.loss_fn(logits.float(), y)

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.spec.binary:
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1.0 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        model = self._require_model()
        xb = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(0, 3, 1, 2).contiguous().to(self.device)
        model.train(training)
        with torch.inference_mode(), self._autocast():
            out = self.run_model(xb)
        return out.float().cpu().numpy()

    # ---- pipelines ----------------------------------------------------------------------
    def device_data(self, batches: Batches) -> DeviceData:
        """The images of ``batches`` on the device (built once per prepared array, then reused)."""
        augmented = P.plan_is_augmented(batches.hflip, batches.vflip, batches.rot90)
        cached = self._device_data
        if (cached is None or cached.key != P.images_key(batches.x) or cached.channels_last != self.channels_last
                or (augmented and len(cached.orientations) == 1)):
            self._device_data = None  # free the old bank before building the new one
            cached = self._device_data = DeviceData(batches.x, batches.y, self.device, self.channels_last, augmented)
        return cached

    def _batches(self, batches: Batches):
        """(images, labels) on the device, one batch at a time, in plan order."""
        check_plan(batches)
        if self.pipeline.name == "device":
            data = self.device_data(batches)
            rows = data.rows(batches)
            order = torch.from_numpy(np.asarray(batches.order, np.int64)).to(self.device)
            scale, shift = data.affine(batches.mean, batches.std)
            for start in range(0, len(rows), batches.batch_size):
                sl = slice(start, start + batches.batch_size)
                yield data.batch(rows[sl], scale, shift), data.y.index_select(0, order[sl])
            return
        cuda = self.device.type == "cuda"
        # Workers hold a copy of the dataset (with this split's mean/std): one persistent loader per
        # (images, batch size, statistics, settings); loaders of other statistics are closed.
        key = (P.images_key(batches.x), batches.batch_size, tuple(np.asarray(batches.mean).tolist()),
               tuple(np.asarray(batches.std).tolist()), self.pipeline)
        loader = self._loaders.get(key)
        if loader is None:
            self._loaders = {k: v for k, v in self._loaders.items() if k[0] == key[0] and k[2:] == key[2:]}
            loader = self._loaders[key] = make_loader(batches, self.pipeline.workers, pin_memory=cuda,
                                                      prefetch=self.pipeline.prefetch, persistent=True)
        loader.sampler.plan = batches
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for xb, yb in loader:
            yield (xb.to(self.device, non_blocking=cuda, memory_format=fmt), yb.to(self.device, non_blocking=cuda))

    # region: training-loop
    def train_epoch(self, batches: Batches) -> EpochStats:
        model = self._require_model()
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = steps = 0
        clock = StepClock(self.device)
        for xb, yb in self._batches(batches):
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.run_model(xb)
                loss = self._loss(logits, yb)
            loss.backward()
            self.optimizer.step()
            clock.step_done()
            n = yb.shape[0]
            # Accumulate on the device: no per-step host sync.
            loss_sum += loss.detach() * (n if self.loss_fn.reduction == "mean" else 1)
            correct += (self._labels(logits.detach()) == yb).sum()
            seen += n
            steps += 1
        if seen == 0:
            raise ValueError("train_epoch got an empty epoch plan (Batches.order is empty)")
        return EpochStats(loss=float(loss_sum.item()) / seen, accuracy=int(correct.item()) / seen,
                          samples=seen, steps=steps, step_seconds=clock.seconds())
    # endregion

    def evaluate(self, plan: Batches) -> tuple[float, np.ndarray]:
        model = self._require_model()
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        probs = []
        with torch.inference_mode():
            for xb, yb in self._batches(plan):
                with self._autocast():
                    logits = self.run_model(xb)
                loss = self._loss(logits, yb)
                loss_sum += loss.double() * (len(yb) if self.loss_fn.reduction == "mean" else 1)
                probs.append(self._probs(logits))
        n = len(plan.order)
        if not probs:
            return 0.0, np.zeros((0, self.spec.num_classes))
        return float(loss_sum.item()) / max(n, 1), torch.cat(probs).cpu().numpy()

    def inference_input(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Any:
        scale, shift = P.normalisation_affine(mean, std)
        x = np.ascontiguousarray(x)
        layout = (0, 1, 2, 3) if self.channels_last else (0, 3, 1, 2)  # rows in the model's memory order
        per_pixel = x.shape[1] * x.shape[2]
        if self.channels_last:
            scale, shift = np.tile(scale, per_pixel), np.tile(shift, per_pixel)
        else:
            scale, shift = np.repeat(scale, per_pixel), np.repeat(shift, per_pixel)
        rows = np.ascontiguousarray(np.transpose(x, layout))
        if self.pipeline.name == "device":  # uint8 already on the device, normalised inside the timed call
            return ("device", torch.from_numpy(rows).to(self.device), torch.from_numpy(scale).to(self.device),
                    torch.from_numpy(shift).to(self.device), x.shape)
        # native: a host batch, as a user hands it over; normalised on the host, then copied
        return ("native", torch.from_numpy(rows), torch.from_numpy(scale), torch.from_numpy(shift), x.shape)

    def infer(self, batch: Any) -> np.ndarray:
        model = self._require_model()
        kind, rows, scale, shift, (b, h, w, c) = batch
        model.eval()
        with torch.inference_mode():
            xb = torch.mul(rows.view(b, -1), scale).add_(shift)
            xb = xb.view(b, h, w, c).permute(0, 3, 1, 2) if self.channels_last else xb.view(b, c, h, w)
            if kind == "native":
                xb = xb.to(self.device, non_blocking=False)
            with self._autocast():
                logits = self.run_model(xb)
            return self._probs(logits).cpu().numpy()  # .cpu() waits for the device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- deployment -------------------------------------------------------------------
    def deploy_formats(self) -> tuple[str, ...]:
        return ("torch_export", "onnx", "litert")

    def export_unsupported(self, fmt: str) -> str | None:
        if fmt == "litert":
            return ("PyTorch → LiteRT needs litert-torch (formerly ai-edge-torch), a separate conversion toolchain "
                    "this benchmark does not install")
        return None

    def export(self, fmt: str, directory: Path) -> Artifact:
        """torch.export (ExportedProgram, ``.pt2``) or ONNX through the dynamo exporter (``torch.onnx.export(dynamo=True)``,
        onnxscript's optimizer applied), of the ``nn.Module`` itself (never the ``torch.compile`` wrapper), in eval
        mode, on the CPU, with a dynamic batch dimension; the input is NCHW."""
        module = self._require_model()
        module.eval()
        if self.device.type != "cpu":  # the artifact holds CPU weights; the runtime places it
            module = copy.deepcopy(module).cpu()
        h, w, c = self.spec.input_shape
        example = (torch.zeros(2, c, h, w),)  # batch 2: torch.export specialises a dimension of size 1
        dynamic = ({0: torch.export.Dim("batch", min=1, max=65536)},)
        if fmt == "torch_export":
            path = directory / "model.pt2"
            torch.export.save(torch.export.export(module, example, dynamic_shapes=dynamic), path)
            return Artifact(str(path), "NCHW", f"torch.export.export + torch.export.save (torch {torch.__version__})")
        if fmt == "onnx":
            import onnxscript

            path = directory / "model.onnx"
            program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic, input_names=["image"],
                                        output_names=["logits"], verbose=False)
            program.optimize()
            program.save(str(path))
            return Artifact(str(path), "NCHW", f"torch.onnx.export(dynamo=True) + optimize (torch {torch.__version__}, "
                                               f"onnxscript {onnxscript.__version__})")
        return super().export(fmt, directory)

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None

    def device_memory_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.memory_allocated(self.device))
        return None

    def release(self) -> None:
        import gc

        compiled = getattr(self, "compiled", False)
        self.model = self.run_model = self.optimizer = self.loss_fn = None
        self._device_data = None
        self._loaders = {}  # persistent DataLoader workers end with their loader
        gc.collect()
        if compiled:
            torch._dynamo.reset()  # compiled graphs and their guards
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class StepClock:
    """Per-step wall times without a per-step host synchronisation: CUDA events recorded on the
    stream at each step's end (read after the epoch), or the host clock on CPU, where every op has
    finished when it returns."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.marks = [torch.cuda.Event(enable_timing=True)]
            self.marks[0].record()
        else:
            self.marks = [time.perf_counter()]

    def step_done(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def _torch_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be mean or sum, got {reduction!r}")
    return reduction


def _canonical_reduction(reduction: str) -> str:
    return {"mean": "mean", "sum": "sum", "sum_over_batch_size": "mean"}.get(reduction, reduction)


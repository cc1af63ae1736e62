"""Native PyTorch: an ``nn.Module`` built from the ModelSpec (NCHW), a ``DataLoader`` over the shared
epoch plan, and a hand-written training loop.

Imported only inside the process that runs a PyTorch cell (never next to TensorFlow/JAX).
"""
from __future__ import annotations

import os
import platform
from collections import OrderedDict
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from core import spec as S
from frameworks.base import Adapter, Batches, EpochStats, ParitySettings, TrainSettings
from frameworks.knobs import cpu_name, finish_knobs, single_value

# PyTorch's own defaults, used when a parity knob is None (parity=framework_defaults).
_TORCH_BN_MOMENTUM = 0.1
_TORCH_BN_EPSILON = 1e-5
_TORCH_ADAM_BETAS = (0.9, 0.999)
_TORCH_ADAM_EPSILON = 1e-8


# region: model-definition
def build_module(spec: S.ModelSpec, parity: ParitySettings) -> nn.Sequential:
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
def augment_nhwc(images: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor, rot90: torch.Tensor) -> torch.Tensor:
    """Per-sample hflip (width) → vflip (height) → rot90 (counter-clockwise, like ``np.rot90``) on NHWC."""
    images = torch.where(hflip[:, None, None, None], images.flip(2), images)
    images = torch.where(vflip[:, None, None, None], images.flip(1), images)
    for k in (1, 2, 3):
        mask = rot90 == k
        if bool(mask.any()):
            images[mask] = torch.rot90(images[mask], k, dims=(1, 2))
    return images


class EpochDataset(torch.utils.data.Dataset):
    """One epoch's plan as a map-style dataset indexed by a LIST of plan positions (one batch).

    Fetching a whole batch per ``__getitem__`` (with ``batch_size=None`` in the DataLoader) keeps
    the gather/augment/normalise vectorised instead of per-sample Python calls.
    """

    def __init__(self, batches: Batches, augment: bool = True) -> None:
        if batches.x.ndim != 4:
            raise ValueError(f"Batches.x must be uint8 (N, H, W, C), got shape {batches.x.shape}")
        n = len(batches.order)
        if not (len(batches.hflip) == len(batches.vflip) == len(batches.rot90) == n):
            raise ValueError("Batches.order/hflip/vflip/rot90 must have the same length")
        self.x, self.y, self.order = batches.x, np.asarray(batches.y, np.int64), np.asarray(batches.order, np.int64)
        self.augment = augment
        self.hflip = torch.from_numpy(np.asarray(batches.hflip, bool))
        self.vflip = torch.from_numpy(np.asarray(batches.vflip, bool))
        self.rot90 = torch.from_numpy(np.asarray(batches.rot90, np.int64) % 4)
        self.mean = torch.as_tensor(np.asarray(batches.mean, np.float32)).view(1, -1, 1, 1)
        self.std = torch.as_tensor(np.asarray(batches.std, np.float32)).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.as_tensor(positions, dtype=torch.int64)
        idx = self.order[pos.numpy()]
        images = torch.from_numpy(np.ascontiguousarray(self.x[idx]))
        if self.augment:
            images = augment_nhwc(images, self.hflip[pos], self.vflip[pos], self.rot90[pos])
        images = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(self.mean).div_(self.std).contiguous()
        return images, torch.from_numpy(self.y[idx])


def make_loader(batches: Batches, num_workers: int = 0, pin_memory: bool = False,
                augment: bool = True) -> torch.utils.data.DataLoader:
    """Yields exactly ``batches.order`` in consecutive batches of ``batch_size`` (last partial kept)."""
    dataset = EpochDataset(batches, augment=augment)
    sampler = torch.utils.data.BatchSampler(torch.utils.data.SequentialSampler(range(len(dataset))),
                                            batch_size=batches.batch_size, drop_last=False)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                                       pin_memory=pin_memory, persistent_workers=False)
# endregion


class PyTorchAdapter(Adapter):
    name = "pytorch"
    backend = "torch"
    bn_moving_variance_estimator = "unbiased"  # BN moving-variance update uses the unbiased (n/(n-1)) batch variance
    num_workers = 0  # DataLoader workers; runner.cell may set it from conf/framework/pytorch.yaml

    def __init__(self, parity: ParitySettings, device: str = "auto", framework: str | None = None) -> None:
        super().__init__(parity, device, framework)
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
        if parity.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.model: nn.Module | None = None

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
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"torch": str(torch.__version__), "cuda": str(torch.version.cuda), "cudnn": str(cudnn),
                "numpy": np.__version__, "python": platform.python_version()}

    def device_info(self) -> dict[str, Any]:
        if self.device.type == "cuda":
            index = torch.cuda.current_device()
            return {"device": f"cuda:{index}", "device_kind": "gpu", "device_name": torch.cuda.get_device_name(index)}
        return {"device": "cpu", "device_kind": "cpu", "device_name": cpu_name()}

    # ---- model ------------------------------------------------------------------------
    def build(self, spec: S.ModelSpec, train: TrainSettings, weights: dict[str, np.ndarray] | None) -> None:
        if train.optimizer.lower() != "adam":
            raise ValueError(f"optimizer {train.optimizer!r} is not supported (only adam)")
        torch.manual_seed(int(train.seed))  # native init and dropout masks
        self.spec, self.train_settings = spec, train
        self.model = build_module(spec, self.parity)
        self.weights_ported = weights is not None
        if weights is not None:
            port_weights(self.model, spec, weights)
        self.model.to(self.device)
        p = self.parity
        betas = (_TORCH_ADAM_BETAS[0] if p.adam_beta_1 is None else p.adam_beta_1,
                 _TORCH_ADAM_BETAS[1] if p.adam_beta_2 is None else p.adam_beta_2)
        eps = _TORCH_ADAM_EPSILON if p.adam_epsilon is None else p.adam_epsilon
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train.learning_rate, betas=betas, eps=eps)
        reduction = _torch_reduction(p.loss_reduction)
        self.loss_fn = nn.BCEWithLogitsLoss(reduction=reduction) if spec.binary else nn.CrossEntropyLoss(reduction=reduction)
        if p.compile not in (None, "on", "off"):
            raise ValueError(f"compile must be off or on, got {p.compile!r}")
        self.compiled = p.compile == "on"
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
            "compile": "on" if self.compiled else "off",
            "compile_detail": f"torch.compile={self.compiled}",
            "cpu_threads_intra_op": torch.get_num_threads(),
            "cpu_threads_inter_op": torch.get_num_interop_threads(),
            "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
            "data_pipeline": f"torch.utils.data.DataLoader(num_workers={self.num_workers})",
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

    # region: training-loop
    def train_epoch(self, batches: Batches) -> EpochStats:
        model = self._require_model()
        loader = make_loader(batches, self.num_workers, pin_memory=self.device.type == "cuda")
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = steps = 0
        for xb, yb in loader:
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.run_model(xb)
                loss = self._loss(logits, yb)
            loss.backward()
            self.optimizer.step()
            n = yb.shape[0]
            # Accumulate on the device: no per-step host sync.
            loss_sum += loss.detach() * (n if self.loss_fn.reduction == "mean" else 1)
            correct += (self._labels(logits.detach()) == yb).sum()
            seen += n
            steps += 1
        if seen == 0:
            raise ValueError("train_epoch got an empty epoch plan (Batches.order is empty)")
        return EpochStats(loss=float(loss_sum.item()) / seen, accuracy=int(correct.item()) / seen,
                          samples=seen, steps=steps)
    # endregion

    def evaluate(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 batch_size: int) -> tuple[float, np.ndarray]:
        model = self._require_model()
        n = len(x)
        plan = Batches(x=x, y=np.asarray(y, np.int64), order=np.arange(n), hflip=np.zeros(n, bool),
                       vflip=np.zeros(n, bool), rot90=np.zeros(n, np.int8), batch_size=batch_size,
                       mean=mean, std=std)
        model.eval()
        loss_sum, probs = 0.0, []
        with torch.inference_mode():
            for xb, yb in make_loader(plan, self.num_workers, augment=False):
                xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
                with self._autocast():
                    logits = self.run_model(xb)
                loss = self._loss(logits, yb)
                loss_sum += float(loss) * (len(yb) if self.loss_fn.reduction == "mean" else 1)
                probs.append(self._probs(logits).cpu().numpy())
        return loss_sum / max(n, 1), np.concatenate(probs) if probs else np.zeros((0, self.spec.num_classes))

    def predict(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        model = self._require_model()
        mean_t = torch.as_tensor(np.asarray(mean, np.float32), device=self.device).view(1, -1, 1, 1)
        std_t = torch.as_tensor(np.asarray(std, np.float32), device=self.device).view(1, -1, 1, 1)
        model.eval()
        with torch.inference_mode():
            xb = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).permute(0, 3, 1, 2)
            xb = ((xb.float() / 255.0 - mean_t) / std_t).contiguous()
            with self._autocast():
                logits = self.run_model(xb)
            probs = self._probs(logits).cpu().numpy()  # .cpu() waits for the device
        return probs

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- memory -----------------------------------------------------------------------
    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return None


def _torch_reduction(reduction: str) -> str:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be mean or sum, got {reduction!r}")
    return reduction


def _canonical_reduction(reduction: str) -> str:
    return {"mean": "mean", "sum": "sum", "sum_over_batch_size": "mean"}.get(reduction, reduction)


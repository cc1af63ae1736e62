"""Framework-neutral model specs and the one seeded weight initialisation every adapter ports.

A ``ModelSpec`` is a flat sequence of layers that each adapter builds natively (Keras layers /
``torch.nn`` modules). Canonical weights are numpy arrays in Keras layout:

- ``<name>.kernel``: conv ``(kh, kw, in, out)`` (HWIO), dense ``(in, out)``; ``<name>.bias``: ``(out,)``
- BatchNorm ``<name>.gamma``, ``.beta``, ``.moving_mean``, ``.moving_variance``: ``(channels,)``

The PyTorch adapter transposes on the way in and out (conv → OIHW, dense → ``(out, in)``). Global
average pooling (not flatten) joins the conv trunk and the dense head, so NHWC/NCHW order never
matters, and only odd kernels with stride 1 are allowed, so "same" padding is symmetric in both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

from core.seeding import rng


@dataclass(frozen=True)
class Conv2D:
    name: str
    filters: int
    kernel_size: int  # odd, stride 1, "same" padding


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class MaxPool2D:
    pool_size: int = 2  # stride = pool_size, "valid" padding (floor) in both frameworks


@dataclass(frozen=True)
class BatchNorm:
    name: str


@dataclass(frozen=True)
class GlobalAvgPool:
    pass


@dataclass(frozen=True)
class Dense:
    name: str
    units: int


@dataclass(frozen=True)
class Dropout:
    rate: float


Layer = Union[Conv2D, ReLU, MaxPool2D, BatchNorm, GlobalAvgPool, Dense, Dropout]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C), channels-last as stored in the dataset cache
    num_classes: int
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def head_units(self) -> int:
        """Two classes ⇒ one logit (sigmoid + BCE); more ⇒ one logit per class (softmax + CE)."""
        return 1 if self.binary else self.num_classes

    @property
    def loss(self) -> Literal["binary_crossentropy", "categorical_crossentropy"]:
        return "binary_crossentropy" if self.binary else "categorical_crossentropy"

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical (Keras-layout) shape of every weight, in build order."""
        shapes: dict[str, tuple[int, ...]] = {}
        channels = self.input_shape[2]
        features: int | None = None
        for layer in self.layers:
            if isinstance(layer, Conv2D):
                shapes[f"{layer.name}.kernel"] = (layer.kernel_size, layer.kernel_size, channels, layer.filters)
                shapes[f"{layer.name}.bias"] = (layer.filters,)
                channels = layer.filters
            elif isinstance(layer, BatchNorm):
                width = features if features is not None else channels
                for part in ("gamma", "beta", "moving_mean", "moving_variance"):
                    shapes[f"{layer.name}.{part}"] = (width,)
            elif isinstance(layer, GlobalAvgPool):
                features = channels
            elif isinstance(layer, Dense):
                if features is None:
                    raise ValueError(f"{self.name}: Dense {layer.name!r} before GlobalAvgPool")
                shapes[f"{layer.name}.kernel"] = (features, layer.units)
                shapes[f"{layer.name}.bias"] = (layer.units,)
                features = layer.units
        return shapes

    def param_counts(self) -> dict[str, int]:
        """``trainable`` (what torch's ``parameters()`` counts) and ``total`` (+ BN moving stats, as Keras counts)."""
        shapes = self.weight_shapes()
        total = sum(int(np.prod(s)) for s in shapes.values())
        moving = sum(int(np.prod(s)) for k, s in shapes.items() if k.endswith(("moving_mean", "moving_variance")))
        return {"trainable": total - moving, "total": total}


def _head(layers: list[Layer], num_classes: int) -> None:
    layers.append(Dense("head", 1 if num_classes == 2 else num_classes))


def _conv_trunk(filters: list[int], kernel_size: int, image_size: int, model: str) -> list[Layer]:
    if kernel_size % 2 != 1:
        raise ValueError(f"{model}: kernel_size must be odd so 'same' padding is symmetric in both frameworks, got {kernel_size}")
    if image_size < 2 ** len(filters):
        raise ValueError(
            f"{model}: image_size {image_size} is too small for {len(filters)} MaxPool(2) blocks "
            f"(needs >= {2 ** len(filters)}); raise data.image_size or pick a smaller model"
        )
    layers: list[Layer] = []
    for i, f in enumerate(filters, start=1):
        layers += [Conv2D(f"conv{i}", int(f), int(kernel_size)), ReLU(), MaxPool2D(2), BatchNorm(f"bn{i}")]
    return layers


def _cnn(name: str, filters, kernel_size, dense_units, dropout, num_classes, image_size, channels) -> ModelSpec:
    if num_classes < 2:
        raise ValueError(f"{name}: a classification task needs >= 2 classes, got {num_classes}")
    filters = list(filters)
    layers = _conv_trunk(filters, kernel_size, image_size, name)
    layers += [GlobalAvgPool(), Dense("dense", int(dense_units)), ReLU(), BatchNorm("bn_dense"), Dropout(float(dropout))]
    _head(layers, num_classes)
    return ModelSpec(name=name, input_shape=(int(image_size), int(image_size), int(channels)),
                     num_classes=int(num_classes), layers=tuple(layers))


def small_cnn(num_classes: int, image_size: int, channels: int = 3, filters=(32, 64, 128), kernel_size: int = 3,
              dense_units: int = 128, dropout: float = 0.25) -> ModelSpec:
    """The fast default: 3 conv blocks, GAP, Dense → BN → Dropout, head."""
    return _cnn("small_cnn", filters, kernel_size, dense_units, dropout, num_classes, image_size, channels)


def capstone_cnn(num_classes: int, image_size: int, channels: int = 3, filters=(32, 64, 128, 256, 512, 1024),
                 kernel_size: int = 5, dense_units: int = 2048, dropout: float = 0.4) -> ModelSpec:
    """The larger land-classification CNN (six Conv5x5 → ReLU → MaxPool → BN blocks, then a wide dense head)."""
    return _cnn("capstone_cnn", filters, kernel_size, dense_units, dropout, num_classes, image_size, channels)


def init_weights(spec: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """One seeded initialisation (glorot_uniform kernels, zero biases, BN identity) in Keras layout.

    Every adapter ports these same arrays, so all frameworks start from identical weights.
    """
    g = rng(seed, "weights")
    weights: dict[str, np.ndarray] = {}
    for key, shape in spec.weight_shapes().items():
        part = key.rsplit(".", 1)[1]
        if part == "kernel":
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights[key] = g.uniform(-limit, limit, size=shape).astype(np.float32)
        elif part in ("gamma", "moving_variance"):
            weights[key] = np.ones(shape, np.float32)
        else:  # bias, beta, moving_mean
            weights[key] = np.zeros(shape, np.float32)
    return weights

"""Adapter overhead: one training epoch through each adapter vs a bare hand-written loop in the same
framework, on the same arrays, model, batch size and augmentation draws.

Each framework runs in its own subprocess (one framework per process). Inside it, after one
untimed warm-up epoch each (graph tracing / compilation / allocator growth), adapter and bare epochs
alternate ``--repeats`` times so both see the same machine load; the medians and their ratio are
printed. Target: adapter / bare <= 1.05 on CPU.

Bare loops:
- pytorch: a Python ``for`` over slices of the epoch order: numpy gather → torch augment/normalise →
  forward/backward/``Adam.step`` (no Dataset/DataLoader, no loss/accuracy bookkeeping).
- keras*: ``model.train_on_batch`` over numpy batches (gather → augment → normalise in numpy), on
  an identically built and compiled model (same compiled train step as ``fit`` uses).

    uv run python benchmarks/bench_adapters.py --samples 1600 --image-size 64 --batch-size 64 \
        --model small_cnn --threads 2 --repeats 3 --frameworks pytorch keras keras_jax keras_torch
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import spec as S  # noqa: E402  (framework-free)
from frameworks.base import Batches, ParitySettings, TrainSettings  # noqa: E402
from core.seeding import rng  # noqa: E402


def make_epoch(samples: int, image_size: int, num_classes: int, batch_size: int, seed: int = 0) -> Batches:
    """Synthetic uint8 images + one epoch plan (order and augmentation draws), the same in every process."""
    g = rng(seed, "bench-adapters")
    x = g.integers(0, 256, size=(samples, image_size, image_size, 3), dtype=np.uint8)
    y = g.integers(0, num_classes, size=samples).astype(np.int64)
    return Batches(x=x, y=y, order=g.permutation(samples).astype(np.int64), hflip=g.random(samples) < 0.5,
                   vflip=g.random(samples) < 0.5, rot90=g.integers(0, 4, size=samples).astype(np.int8),
                   batch_size=batch_size, mean=np.array([0.45, 0.5, 0.55], np.float32),
                   std=np.array([0.2, 0.25, 0.3], np.float32))


def _bare_torch(adapter, spec, parity, plan: Batches, lr: float):
    import torch

    from frameworks.pytorch_adapter import augment_nhwc, build_module, port_weights

    model = build_module(spec, parity)
    port_weights(model, spec, S.init_weights(spec, 0))
    model.to(adapter.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(parity.adam_beta_1, parity.adam_beta_2), eps=parity.adam_epsilon)
    loss_fn = torch.nn.BCEWithLogitsLoss() if spec.binary else torch.nn.CrossEntropyLoss()
    mean = torch.as_tensor(plan.mean).view(1, -1, 1, 1)
    std = torch.as_tensor(plan.std).view(1, -1, 1, 1)
    hflip, vflip = torch.from_numpy(plan.hflip), torch.from_numpy(plan.vflip)
    rot90 = torch.from_numpy(plan.rot90.astype(np.int64))

    def epoch() -> None:
        model.train()
        for start in range(0, len(plan.order), plan.batch_size):
            stop = min(start + plan.batch_size, len(plan.order))
            idx = plan.order[start:stop]
            xb = augment_nhwc(torch.from_numpy(plan.x[idx]), hflip[start:stop], vflip[start:stop], rot90[start:stop])
            xb = ((xb.permute(0, 3, 1, 2).float() / 255.0 - mean) / std).contiguous().to(adapter.device)
            yb = torch.from_numpy(plan.y[idx]).to(adapter.device)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits[:, 0], yb.float()) if spec.binary else loss_fn(logits, yb)
            loss.backward()
            opt.step()
        adapter.sync()

    return epoch


def _bare_keras(adapter, spec, parity, plan: Batches, lr: float):
    from frameworks.keras_adapter import build_keras_model, port_weights
    from core.batches import apply_augment
    from frameworks.knobs import normalise_numpy

    keras = adapter.keras
    model = build_keras_model(keras, spec, parity)
    port_weights(model, spec, S.init_weights(spec, 0))
    loss = (keras.losses.BinaryCrossentropy(from_logits=True) if spec.binary
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(lr, beta_1=parity.adam_beta_1, beta_2=parity.adam_beta_2,
                                                  epsilon=parity.adam_epsilon),
                  loss=loss, jit_compile=parity.compile == "on")

    def epoch() -> None:
        for start in range(0, len(plan.order), plan.batch_size):
            stop = min(start + plan.batch_size, len(plan.order))
            idx = plan.order[start:stop]
            xb = apply_augment(plan.x[idx], plan.hflip[start:stop], plan.vflip[start:stop], plan.rot90[start:stop])
            yb = plan.y[idx]
            model.train_on_batch(normalise_numpy(xb, plan.mean, plan.std),
                                 yb.astype(np.float32)[:, None] if spec.binary else yb)
        adapter.sync()

    return epoch


def worker(args: argparse.Namespace) -> dict:
    from frameworks.base import get_adapter

    parity = ParitySettings(cpu_threads=args.threads, compile=args.compile, deterministic=False)
    spec = getattr(S, args.model)(args.num_classes, args.image_size)
    plan = make_epoch(args.samples, args.image_size, args.num_classes, args.batch_size)
    t0 = time.perf_counter()
    adapter = get_adapter(args.framework, parity, args.device)
    import_s = time.perf_counter() - t0
    train = TrainSettings(batch_size=args.batch_size, learning_rate=1e-3)
    adapter.build(spec, train, S.init_weights(spec, 0))
    bare = (_bare_torch if args.framework == "pytorch" else _bare_keras)(adapter, spec, parity, plan, train.learning_rate)

    def adapter_epoch() -> None:
        adapter.train_epoch(plan)
        adapter.sync()

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    warmup = {"adapter": timed(adapter_epoch), "bare": timed(bare)}
    runs: dict[str, list[float]] = {"adapter": [], "bare": []}
    for i in range(args.repeats):
        # Alternate which goes first so slow drifts in machine load do not favour one side.
        order = (("adapter", adapter_epoch), ("bare", bare)) if i % 2 == 0 else (("bare", bare), ("adapter", adapter_epoch))
        for name, fn in order:
            runs[name].append(timed(fn))
    adapter_s, bare_s = statistics.median(runs["adapter"]), statistics.median(runs["bare"])
    return {"framework": args.framework, "device": adapter.device_info()["device"], "import_s": import_s,
            "warmup_s": warmup, "adapter_s": runs["adapter"], "bare_s": runs["bare"],
            "adapter_median_s": adapter_s, "bare_median_s": bare_s, "ratio": adapter_s / bare_s,
            # Contention on a shared machine only ever adds time, so the ratio of minima is the
            # least noisy estimate of the adapter's own overhead.
            "ratio_of_minima": min(runs["adapter"]) / min(runs["bare"]),
            "images_per_s_adapter": args.samples / adapter_s}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", nargs="+", default=["pytorch", "keras", "keras_jax", "keras_torch"])
    p.add_argument("--samples", type=int, default=1600)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", choices=["small_cnn", "capstone_cnn"], default="small_cnn")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", choices=["off", "on"], default="off")
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", dest="framework", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.framework:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    results, failed = [], []
    base = [a for a in sys.argv[1:]]
    for fw in args.frameworks:
        print(f"[bench] {fw} …", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *base, "--worker", fw], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            failed.append(fw)
            print(f"[bench] {fw} failed (exit {proc.returncode}):\n" + "\n".join(proc.stderr.splitlines()[-12:]), file=sys.stderr)
            continue
        results.append(json.loads(line[len("RESULT "):]))
    print(f"\none training epoch: {args.samples} images {args.image_size}x{args.image_size}, batch {args.batch_size}, "
          f"{args.model}, {args.threads} threads, compile={args.compile}, median of {args.repeats} alternating runs (after 1 warm-up each); target ratio <= 1.05")
    print(f"{'framework':<12} {'device':<7} {'adapter s':>10} {'bare s':>9} {'ratio':>7} {'min-ratio':>9} {'warm-up a/b s':>15}  runs adapter | bare")
    for r in results:
        print(f"{r['framework']:<12} {r['device']:<7} {r['adapter_median_s']:>10.2f} {r['bare_median_s']:>9.2f} {r['ratio']:>7.3f} {r['ratio_of_minima']:>9.3f} "
              f"{r['warmup_s']['adapter']:>7.1f}/{r['warmup_s']['bare']:<7.1f}  "
              f"{' '.join(f'{t:.2f}' for t in r['adapter_s'])} | {' '.join(f'{t:.2f}' for t in r['bare_s'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

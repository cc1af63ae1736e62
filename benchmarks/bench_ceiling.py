"""The ceiling benchmark: each adapter against a bare, device-resident training loop in the same
framework, on the same data, model, batch size and device — plus the data path alone (null model).

One subprocess per framework (never two frameworks in one process). Inside it, per (model,
pipeline, execution mode):

- **bare**: the epoch's batches are made untimed with the numpy reference (``core.batches.apply_augment``
  + normalisation) and put on the device once; the timed loop is only the minimal train step a user
  of that framework would write (PyTorch: ``zero_grad / loss.backward / Adam.step``; Keras on JAX:
  ``stateless_call`` + ``jax.value_and_grad`` + ``optimizer.stateless_apply`` under ``jax.jit``; on TF:
  a ``tf.function`` step with ``GradientTape``; on torch: the Keras torch custom-loop recipe). It is
  the compute-only reference, so adapter/bare shows every cost the harness adds: making batches
  (gather + augment + normalise), the loop, ``fit``'s bookkeeping, per-step timing.
- **adapter**: ``adapter.train_epoch(plan)`` on the same plan (the same pixels reach the model), with its
  hardware-dependent choices (the memory layout) measured on the device exactly as a cell measures them
  (``runner/cell/tuning.py``).

The ceiling is the framework's best on the device, not one layout's: the bare loop is written in every
layout the framework offers (PyTorch contiguous NCHW and channels_last; Keras channels_last and
channels_first), each timed, and the fastest is the reference (each layout's img/s is printed).

After one untimed warm-up epoch each (tracing, compilation, autotuning, the device bank), adapter
and bare epochs alternate ``--repeats`` times (alternating which goes first), so both see the same
machine load; min and median epoch times give the throughput ratios. The **null model** times the
adapter's ``pipeline=device`` data path alone (batches made and left on the device, no model).

    uv run python benchmarks/bench_ceiling.py                          # CPU, small_cnn, pipeline=device
    uv run python benchmarks/bench_ceiling.py --device gpu --models small_cnn capstone_cnn \\
        --samples 10240 --batch-size 256 --modes default compiled --pipelines device native
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
from core.config import ParityConfig, PipelineConfig, TrainConfig  # noqa: E402
from frameworks.base import Batches  # noqa: E402
from core.batches import apply_augment  # noqa: E402
from core.seeding import rng  # noqa: E402

FRAMEWORKS = ("pytorch", "keras", "keras_jax", "keras_torch")


def make_plan(samples: int, image_size: int, num_classes: int, batch_size: int, seed: int = 0) -> Batches:
    """Synthetic uint8 images + one epoch plan with every augmentation drawn, the same in every process."""
    g = rng(seed, "bench-ceiling")
    x = g.integers(0, 256, size=(samples, image_size, image_size, 3), dtype=np.uint8)
    y = g.integers(0, num_classes, size=samples).astype(np.int64)
    return Batches(x=x, y=y, order=g.permutation(samples).astype(np.int64), hflip=g.random(samples) < 0.5,
                   vflip=g.random(samples) < 0.5, rot90=g.integers(0, 4, size=samples).astype(np.int8),
                   batch_size=batch_size, mean=np.array([0.45, 0.5, 0.55], np.float32),
                   std=np.array([0.2, 0.25, 0.3], np.float32))


def reference_batches(plan: Batches) -> list[tuple[np.ndarray, np.ndarray]]:
    """The epoch's batches from the numpy reference: NHWC float32 images, int64 labels."""
    images = apply_augment(plan.x[plan.order], plan.hflip, plan.vflip, plan.rot90)
    images = (images.astype(np.float32) / np.float32(255.0) - plan.mean) / plan.std
    labels = plan.y[plan.order]
    return [(images[s:s + plan.batch_size], labels[s:s + plan.batch_size])
            for s in range(0, len(labels), plan.batch_size)]


# ---- bare loops (one per framework; each returns a zero-argument "run one epoch" function) ----------
def bare_pytorch(adapter, spec, parity, plan, lr, layout):
    import torch

    from frameworks.pytorch_adapter import build_module, port_weights

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = build_module(spec, parity)
    port_weights(model, spec, S.init_weights(spec, 0))
    model.to(adapter.device, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(parity.adam_beta_1, parity.adam_beta_2), eps=parity.adam_epsilon)
    loss_fn = torch.nn.CrossEntropyLoss()
    run = torch.compile(model) if parity.execution == "compiled" else model
    data = [(torch.from_numpy(x).permute(0, 3, 1, 2).to(adapter.device, memory_format=fmt), torch.from_numpy(y).to(adapter.device))
            for x, y in reference_batches(plan)]

    def epoch() -> None:
        model.train()
        for xb, yb in data:
            opt.zero_grad(set_to_none=True)
            loss_fn(run(xb), yb).backward()
            opt.step()
        adapter.sync()

    return epoch


def _keras_parts(adapter, spec, parity, lr, layout):
    from frameworks.keras_adapter import build_keras_model, port_weights

    keras = adapter.keras
    model = build_keras_model(keras, spec, parity, layout)
    port_weights(model, spec, S.init_weights(spec, 0))
    opt = keras.optimizers.Adam(lr, beta_1=parity.adam_beta_1, beta_2=parity.adam_beta_2, epsilon=parity.adam_epsilon)
    return keras, model, opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def bare_keras_jax(adapter, spec, parity, plan, lr, layout):
    import jax
    import jax.numpy as jnp

    keras, model, opt, loss_fn = _keras_parts(adapter, spec, parity, lr, layout)
    opt.build(model.trainable_variables)

    def loss_and_updates(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

    @jax.jit  # Keras-on-JAX is always jitted (execution modes differ only on TF and torch)
    def step(state, x, y):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, opt_vars = opt.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    state = [([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
              [v.value for v in opt.variables])]
    data = [(jnp.asarray(x), jnp.asarray(y)) for x, y in reference_batches(plan)]

    def epoch() -> None:
        loss = None
        for xb, yb in data:
            loss, state[0] = step(state[0], xb, yb)
        jax.block_until_ready((loss, state[0]))

    return epoch


def bare_keras_tf(adapter, spec, parity, plan, lr, layout):
    import tensorflow as tf

    keras, model, opt, loss_fn = _keras_parts(adapter, spec, parity, lr, layout)

    @tf.function(jit_compile=parity.execution == "compiled")
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    data = [(tf.constant(x), tf.constant(y)) for x, y in reference_batches(plan)]

    def epoch() -> None:
        loss = None
        for xb, yb in data:
            loss = step(xb, yb)
        loss.numpy()

    return epoch


def bare_keras_torch(adapter, spec, parity, plan, lr, layout):
    import torch

    keras, model, opt, loss_fn = _keras_parts(adapter, spec, parity, lr, layout)
    device = keras.ops.convert_to_tensor(np.zeros(1, np.float32)).device
    data = [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in reference_batches(plan)]
    weights = model.trainable_weights
    forward = torch.compile(model) if parity.execution == "compiled" else model

    def epoch() -> None:  # the Keras guide's custom training loop on the torch backend
        for xb, yb in data:
            loss = loss_fn(yb, forward(xb, training=True))
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                opt.apply([w.value.grad for w in weights], weights)
        adapter.sync()

    return epoch


BARE = {"pytorch": bare_pytorch, "keras_jax": bare_keras_jax, "keras": bare_keras_tf, "keras_torch": bare_keras_torch}
#: The layouts a bare loop can be written in (the adapter's ``tunables`` candidates): the ceiling is the best of them.
LAYOUTS = {"pytorch": ("contiguous", "channels_last"), "keras": ("channels_last", "channels_first"),
           "keras_jax": ("channels_last", "channels_first"), "keras_torch": ("channels_last", "channels_first")}


def best_bare(fw, adapter, spec, parity, plan, lr, repeats: int) -> tuple[str, object, dict[str, float]]:
    """Every layout's bare loop, one warm-up epoch then ``repeats`` epochs alternating: (the fastest layout,
    its epoch function, median seconds per layout) — the ceiling is the framework's best on the device."""
    loops = {layout: BARE[fw](adapter, spec, parity, plan, lr, layout) for layout in LAYOUTS[fw]}
    for loop in loops.values():
        loop()
    times = alternate(loops, max(repeats // 2, 2))
    medians = {layout: statistics.median(v) for layout, v in times.items()}
    best = min(medians, key=medians.get)
    return best, loops[best], medians


def data_path_epoch(framework: str, adapter, plan: Batches):
    """The adapter's pipeline=device data path alone: every batch made on the device, no model."""
    if framework == "pytorch":
        def epoch() -> None:
            for _ in adapter._batches(plan):
                pass
            adapter.sync()
        return epoch
    from frameworks.keras_adapter import make_dataset

    def epoch() -> None:
        ds = make_dataset(adapter, plan)
        if hasattr(ds, "as_numpy_iterator"):  # tf.data: iterate it as fit does (tensors, no host copy)
            for _ in ds:
                pass
            return
        last = None
        for i in range(len(ds)):
            last = ds[i]
        if framework == "keras_jax":
            import jax

            jax.block_until_ready(last)
        adapter.sync()
    return epoch


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def alternate(fns: dict, repeats: int) -> dict[str, list[float]]:
    names = list(fns)
    runs: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):  # alternate who goes first: drift favours neither
            runs[name].append(timed(fns[name]))
    return runs


def worker(args: argparse.Namespace) -> dict:
    from frameworks.base import get_adapter
    from runner.cell import tuning

    fw = args.framework
    plan = make_plan(args.samples, args.image_size, args.num_classes, args.batch_size)
    results, null = [], None
    for mode in args.modes:
        parity = ParityConfig(cpu_threads=args.threads, execution=mode, deterministic=False)
        t0 = time.perf_counter()
        adapter = get_adapter(fw, parity, args.device, PipelineConfig())
        import_s = time.perf_counter() - t0
        for model_name in args.models:
            spec = getattr(S, model_name)(args.num_classes, args.image_size)
            train = TrainConfig(batch_size=args.batch_size, learning_rate=1e-3)
            # The adapter as a cell runs it: its layout measured on this device (runner/cell/tuning.py) …
            tuned = tuning.measure(adapter, spec, train, S.init_weights(spec, 0), 0, plan)
            adapter.build(spec, train, S.init_weights(spec, 0))
            # … against the best bare loop over every layout.
            layout, bare, bare_layouts = best_bare(fw, adapter, spec, parity, plan, train.learning_rate, args.repeats)
            for pipeline in args.pipelines:
                adapter.set_pipeline(PipelineConfig(name=pipeline, workers=args.workers, prefetch=2))

                def adapter_epoch() -> None:
                    adapter.train_epoch(plan)
                    adapter.sync()

                warmup = {"adapter": timed(adapter_epoch), "bare": timed(bare)}
                runs = alternate({"adapter": adapter_epoch, "bare": bare}, args.repeats)
                a_med, b_med = statistics.median(runs["adapter"]), statistics.median(runs["bare"])
                results.append({
                    "framework": fw, "model": model_name, "device": adapter.device_info()["device"],
                    "device_name": adapter.device_info()["device_name"], "pipeline": pipeline, "mode": mode,
                    "import_s": import_s, "warmup_s": warmup, "adapter_s": runs["adapter"], "bare_s": runs["bare"],
                    "adapter_img_s_median": args.samples / a_med, "bare_img_s_median": args.samples / b_med,
                    "ratio_median": b_med / a_med,  # throughput ratio adapter/bare = time ratio bare/adapter
                    "ratio_best": min(runs["bare"]) / min(runs["adapter"]),
                    "knobs": {k: adapter.knobs()[k] for k in ("execution", "compile_detail", "memory_format", "data_pipeline")},
                    "adapter_layout": {k: v["choice"] for k, v in tuned.items()}, "bare_layout": layout,
                    "bare_layouts_s": bare_layouts,
                })
        if null is None and not args.no_null_model:
            adapter.set_pipeline(PipelineConfig())
            null_plan = make_plan(args.null_samples, args.image_size, args.num_classes, args.batch_size, seed=1)
            epoch = data_path_epoch(fw, adapter, null_plan)
            epoch()  # warm-up: the device bank, tracing
            times = alternate({"data": epoch}, args.repeats)["data"]
            null = {"framework": fw, "samples": args.null_samples, "batch_size": args.batch_size,
                    "img_s_median": args.null_samples / statistics.median(times),
                    "img_s_min": args.null_samples / max(times), "img_s_best": args.null_samples / min(times)}
    return {"results": results, "null": null}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument("--models", nargs="+", default=["small_cnn"], choices=["small_cnn", "capstone_cnn"])
    p.add_argument("--pipelines", nargs="+", default=["device"], choices=["device", "native"])
    p.add_argument("--modes", nargs="+", default=["default"], choices=["default", "compiled"])
    p.add_argument("--samples", type=int, default=1024, help="training images per epoch")
    p.add_argument("--null-samples", type=int, default=8192, help="images per epoch of the data-path-only run")
    p.add_argument("--no-null-model", action="store_true")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="pipeline=native workers")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu")
    p.add_argument("--json", help="also write every measurement here")
    p.add_argument("--worker", dest="framework", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.framework:
        print("RESULT " + json.dumps(worker(args), default=float), flush=True)
        return 0
    rows, nulls, failed = [], [], []
    for fw in args.frameworks:
        print(f"[bench] {fw} …", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", fw], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            failed.append(fw)
            print(f"[bench] {fw} failed (exit {proc.returncode}):\n" + "\n".join(proc.stderr.splitlines()[-15:]), file=sys.stderr)
            continue
        out = json.loads(line[len("RESULT "):])
        rows += out["results"]
        if out["null"]:
            nulls.append(out["null"])
    print(f"\nadapter vs bare loop: {args.samples} images {args.image_size}x{args.image_size} per epoch, batch {args.batch_size}, "
          f"{args.threads} threads, {args.repeats} alternating epochs each after 1 warm-up; throughput ratio adapter/bare "
          f"(median epochs; best = fastest epochs)")
    print(f"{'framework':<12} {'model':<13} {'device':<7} {'pipeline':<8} {'mode':<9} {'adapter img/s':>13} "
          f"{'bare img/s':>10} {'ratio':>6} {'best':>6}  layouts (adapter measured · bare best of each)")
    for r in rows:
        bare = ", ".join(f"{k} {args.samples / v:.0f}" for k, v in r["bare_layouts_s"].items())
        print(f"{r['framework']:<12} {r['model']:<13} {r['device']:<7} {r['pipeline']:<8} {r['mode']:<9} "
              f"{r['adapter_img_s_median']:>13.0f} {r['bare_img_s_median']:>10.0f} {r['ratio_median']:>6.3f} {r['ratio_best']:>6.3f}"
              f"  {'/'.join(r['adapter_layout'].values()) or 'forced'} · best {r['bare_layout']} ({bare} img/s)")
    if nulls:
        print(f"\nnull model (pipeline=device data path alone: gather + augment + normalise, no model), "
              f"{args.image_size}x{args.image_size}, batch {args.batch_size}, {args.repeats} epochs")
        print(f"{'framework':<12} {'img/s min':>10} {'img/s median':>13} {'img/s best':>11}")
        for n in nulls:
            print(f"{n['framework']:<12} {n['img_s_min']:>10.0f} {n['img_s_median']:>13.0f} {n['img_s_best']:>11.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows, "null_model": nulls}, indent=2, default=float))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

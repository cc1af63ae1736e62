"""Multi-node: a head and two typed GPU worker nodes on this machine, ``runner.address=<head>``.

The cluster is what a real one looks like, shrunk: token authentication ON (Ray's default for
``ray start --head``; every node and the driver get ``RAY_AUTH_MODE=token`` and this test's own
token in ``RAY_AUTH_TOKEN``), every node started with ``--node-ip-address=127.0.0.1`` and its own
``--temp-dir`` (Ray 2.60 still reports and serves some endpoints on the machine's address: the token,
not the loopback address, is what keeps other users of the machine out), a head with no
CPUs or GPUs (it runs no cells), and two workers with two fake GPUs each, typed ``H100`` and
``A100`` through Ray's ``accelerator_type:<T>`` resource. The sweeps run the numpy fake framework
and its twin (two "frameworks", so cells form pairs).

The nodes are ``ray start --block`` processes in their own sessions, stopped by SIGTERM to exactly
those processes (``--block`` makes a node shut its processes down), then SIGKILL to their process
group if needed. ``ray stop`` is never used: it stops every Ray process of this user on the
machine, including other people's.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from runner_support import FAKE, cli_env, run_cli, runs

RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # reason: three Ray nodes (minutes on a loaded 2-core machine)

#: Two fake frameworks, so every condition is a pair. Cells last (KVP_FAKE_SLEEP on the nodes: the
#: grid reads fake_twin's file as it is, so the nodes' environment is where both get their sleep).
PAIRS = [*FAKE, "grid.framework=[fake,fake_twin]", "grid.device=[gpu]"]
NODE_ENV = {"KVP_FAKE_SLEEP": "0.3"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:  # no head to join yet: ray.init keeps retrying
        return 0
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


class Cluster:
    def __init__(self) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.temp_dirs: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.args: dict[str, list[str]] = {}
        self.logs: dict[str, str] = {}  # node → its `ray start` output (for a failure message)
        self.restarts: dict[str, int] = {}

    def start(self, name: str, args: list[str]) -> None:
        temp_dir = tempfile.mkdtemp(prefix=f"kvp{name[:2]}-", dir="/tmp")  # short: unix sockets are ≤ 107 bytes
        self.temp_dirs.append(temp_dir)
        # Ray's fixed default ports (dashboard agent 52365, client server 10001, dashboard 8265) clash
        # with every other Ray on the machine and between these nodes: each node gets free ones.
        ports = [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                 f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
        if "--head" in args:
            ports += [f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}"]
        self.args[name] = args + ports + ["--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--block",
                                          "--disable-usage-stats"]
        self.logs[name] = f"{temp_dir}.log"
        self._spawn(name)

    def _spawn(self, name: str) -> None:
        log = open(self.logs[name], "a")
        self.procs[name] = subprocess.Popen([RAY, "start", *self.args[name]], env=cli_env(**self.env, **NODE_ENV),
                                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=_start_boost)
        log.close()

    def unboost(self) -> None:
        """Every process of the nodes back to normal priority (processes started later inherit it)."""
        groups = {proc.pid for proc in self.procs.values()}
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            try:
                if os.getpgid(pid) in groups:
                    os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
                    os.setpriority(os.PRIO_PROCESS, pid, 0)
            except (OSError, AttributeError):
                pass

    def wait_nodes(self, count: int, timeout: float = 400) -> None:
        """Until ``count`` nodes are alive. On a loaded machine a raylet can miss Ray's fixed start-up
        limits (15 s for its Python agents to report their ports, 30 s to register) and its
        ``ray start`` exits: that node is started again (four times at most)."""
        deadline = time.time() + timeout
        while True:
            time.sleep(5)
            if all(p.poll() is None for p in self.procs.values()) and \
                    _alive_nodes(self.address, cli_env(**self.env)) >= count:
                return
            assert time.time() < deadline, f"the cluster did not reach {count} nodes"
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    tail = Path(self.logs[name]).read_text()[-1500:]
                    assert self.restarts[name] <= 4, f"ray start {name} exited {self.restarts[name]} times:\n{tail}"
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)  # what the failed start left (GCS on the port)
                    except ProcessLookupError:
                        pass
                    time.sleep(1)
                    self._spawn(name)

    def kill(self, name: str) -> None:
        """The node dies at once (its raylet and workers, SIGKILL): a lost machine."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: that node's processes only
        proc.wait()

    def stop(self) -> None:
        for name in reversed(list(self.procs)):  # workers first, then the head
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of that node outlived its `ray start`
            except ProcessLookupError:
                pass
            proc.wait()
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)
        for log in self.logs.values():
            Path(log).unlink(missing_ok=True)


def _start_boost() -> None:
    """A starting node runs ahead of the rest of the machine, where allowed (root): round-robin
    real-time priority 1, else nice -19. Its raylet gives its Python agents a fixed 15 s to report
    their ports, which a loaded 2-core machine misses. ``Cluster.unboost`` resets every process of
    the node once the cluster is up (the cells must not run at a raised priority)."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except (OSError, AttributeError):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -19)
        except OSError:  # not allowed: start at normal priority
            pass


def _worker(address: str, atype: str) -> list[str]:
    return [f"--address={address}", "--num-cpus=2", "--num-gpus=2",
            f"--resources={json.dumps({f'accelerator_type:{atype}': 1})}"]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start("head", ["--head", f"--port={c.port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false"])
        c.wait_nodes(1)
        for count, (name, atype) in enumerate((("h100", "H100"), ("a100", "A100")), start=2):
            c.start(name, _worker(c.address, atype))  # one at a time: starting is what loads the machine
            c.wait_nodes(count)
        c.unboost()
        yield c
    finally:
        c.stop()


def _sweep(cluster: Cluster, out: Path, extra: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return run_cli([*PAIRS, *extra, f"runner.address={cluster.address}", f"hydra.run.dir={out}"], timeout=timeout,
                   **cluster.env)


def _spans(df):
    return sorted((r.start_time, r.end_time) for r in df.itertuples())


def _assert_pairs_share(df, *, same_gpu: bool) -> None:
    for _, pair in df.groupby(["seed", "batch_size", "device"]):
        assert len(pair) == 2 and set(pair.framework) == {"fake", "fake_twin"}
        assert pair.accelerator_type.nunique() == 1, pair[["framework", "accelerator_type", "node_id", "gpu_index"]]
        if same_gpu:
            assert pair.node_id.nunique() == 1 and pair.gpu_index.nunique() == 1, pair[["node_id", "gpu_index"]]


def test_placement_and_pairs_on_one_gpu(cluster, tmp_path):
    record = tmp_path / "record.jsonl"
    proc = _sweep(cluster, tmp_path / "out", ["grid.seed=[0,1,2,3]", f"framework.fake.record_file={record}"])
    assert proc.returncode == 0, proc.stdout[-6000:]
    df = runs(tmp_path / "out")
    assert len(df) == 8 and set(df.status) == {"ok"}
    assert "on 4 slots" in proc.stdout  # two GPUs on each worker; the 0-CPU head has no slot
    # Placement: both typed workers ran cells, each cell on one GPU bundle of one node, facts in the row.
    assert set(df.accelerator_type) == {"H100", "A100"} and df.node_id.nunique() == 2
    # node_ip: the node's address as the cluster reports it (Ray 2.60 reports the machine's address even
    # for --node-ip-address=127.0.0.1; its services listen there too — the token is what guards them).
    assert df.node_ip.notna().all() and df.groupby("node_id").node_ip.nunique().eq(1).all()
    assert df.gpu_uuid.isna().all()  # fake GPUs: no UUID, and no error
    assert df.groupby("node_id").accelerator_type.nunique().eq(1).all()
    assert set(df.gpu_index) <= {0, 1} and df.git_sha.notna().all() and (df.git_sha != "unknown").all()
    # Pairs: both frameworks of one seed ran on the same physical GPU (node + index).
    _assert_pairs_share(df, same_gpu=True)
    # One timing cell per GPU at a time.
    for _, gpu in df.groupby(["node_id", "gpu_index"]):
        spans = _spans(gpu)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "two cells overlapped on one GPU"
    # Each actor saw exactly one GPU, for its whole life.
    seen: dict[int, set] = {}
    for event in map(json.loads, record.read_text().splitlines()):
        seen.setdefault(event["pid"], set()).add(event["cuda_visible_devices"])
    assert seen and all(len(v) == 1 and v.pop() in ("0", "1") for v in seen.values())


def test_a_typed_grid_runs_on_its_type_only(cluster, tmp_path):
    proc = _sweep(cluster, tmp_path / "out", ["grid.seed=[0,1]", "grid.device=[gpu:A100]"])
    assert proc.returncode == 0, proc.stdout[-6000:]
    df = runs(tmp_path / "out")
    assert len(df) == 4 and set(df.accelerator_type) == {"A100"} and set(df.device) == {"gpu:A100"}
    _assert_pairs_share(df, same_gpu=True)


def test_a_wrong_token_is_one_clear_error(cluster, tmp_path):
    proc = run_cli([*PAIRS, f"runner.address={cluster.address}", f"hydra.run.dir={tmp_path}"], timeout=300,
                   RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    assert proc.returncode != 0
    assert "RAY_AUTH_MODE=token" in proc.stdout and "RAY_AUTH_TOKEN" in proc.stdout, proc.stdout[-3000:]


def _fragment_nodes(out: Path) -> list[str]:
    root = out / "fragments"
    if not root.is_dir():
        return []
    nodes = []
    for frag in root.iterdir():
        if frag.name.startswith("."):
            continue
        try:
            nodes += pq.read_table(frag / "runs.parquet", columns=["accelerator_type"]).column(0).to_pylist()
        except OSError:
            pass
    return nodes


def test_a_lost_node_s_cells_are_retried_and_stay_paired(cluster, tmp_path):
    """Runs after the others but one: it kills the H100 worker in the middle of a sweep."""
    out = tmp_path / "out"
    args = [*PAIRS, "grid.seed=[0,1,2,3,4,5]",
            f"runner.address={cluster.address}", f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=Path(__file__).resolve().parents[1],
                            env=cli_env(**cluster.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while "H100" not in _fragment_nodes(out):  # the H100 node has finished a cell: now it dies
            assert proc.poll() is None and time.time() < deadline, "no cell finished on the H100 node"
            time.sleep(0.5)
        cluster.kill("h100")
        stdout, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-6000:]
    assert "was lost" in stdout, stdout[-6000:]
    df = runs(out)
    assert len(df) == 12 and set(df.status) == {"ok"}
    assert (df.attempt > 1).any()  # retried (a running cell) or re-run (to keep its pair on one type)
    _assert_pairs_share(df, same_gpu=False)
    # What moved went to the A100 node (the only one left), the pair's finished H100 partner with it.
    assert (df[df.attempt > 1].accelerator_type == "A100").all()
    assert "to stay paired" in stdout or "retrying" in stdout


def test_a_node_that_joins_mid_sweep_gets_cells(cluster, tmp_path):
    """Runs last, after the H100 node was killed: only the A100 node is left when a sweep starts; an L4
    node joins while it runs, and the next dispatch rounds (the node list is re-read every 5 s) give
    it cells — each pair still on one GPU. The fake cells sleep 3 s per step, so the sweep outlasts
    the node's start-up (~15-30 s here) by about a minute."""
    out = tmp_path / "out"
    args = [*PAIRS, f"grid.seed=[{','.join(map(str, range(16)))}]", "framework.fake.step_sleep_s=3.0",
            f"runner.address={cluster.address}", f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=Path(__file__).resolve().parents[1],
                            env=cli_env(**cluster.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while not _fragment_nodes(out):  # the sweep is dispatching on the nodes it found at its start
            assert proc.poll() is None and time.time() < deadline, "no cell finished"
            time.sleep(0.5)
        cluster.start("l4", _worker(cluster.address, "L4"))
        cluster.wait_nodes(3)  # head + A100 + L4
        cluster.unboost()
        joined_at = time.time()
        stdout, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout[-6000:]
    df = runs(out)
    assert len(df) == 32 and set(df.status) == {"ok"}
    assert set(df.accelerator_type) == {"A100", "L4"}, (time.time() - joined_at, df.accelerator_type.value_counts())
    _assert_pairs_share(df, same_gpu=True)

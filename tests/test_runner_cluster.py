"""Multi-node: a head and a second Ray node on this machine, ``runner.address=<head>``; cells run on both.

The nodes are ``ray start --block`` processes in their own sessions, stopped by SIGTERM to exactly
those processes (``--block`` makes a node shut its processes down on SIGTERM). ``ray stop`` is not
used: it stops every Ray process of this user on the machine, including other people's.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from runner_support import FAKE, cli_env, run_cli, runs

RAY = str(Path(sys.executable).with_name("ray"))

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # reason: starts two Ray nodes (~1 min on 2 cores)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A loopback-only test cluster: no token authentication (Ray 2.5x+ enables it for `ray start --head`,
#: and then every node and driver needs RAY_AUTH_MODE=token plus the token).
ENV = {"RAY_AUTH_MODE": "disabled"}


def _count_nodes(address: str) -> int:
    code = ("import ray; ray.init(address=%r, logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(**ENV), capture_output=True, text=True,
                          timeout=120)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


@pytest.fixture
def two_node_cluster():
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="kvpray-", dir="/tmp")  # short: unix socket paths are ≤ 107 bytes
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--num-gpus=0", "--block", "--disable-usage-stats"]
    procs = []

    def start(args):
        procs.append(subprocess.Popen([RAY, "start", *args, *common], env=cli_env(**ENV), start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
               f"--temp-dir={temp_dir}"])
        time.sleep(3)
        start([f"--address={address}", "--node-ip-address=127.0.0.1"])
        deadline = time.time() + 180
        while _count_nodes(address) < 2:
            assert time.time() < deadline, "the two-node cluster did not come up"
            assert all(p.poll() is None for p in procs), "a ray start process exited"
            time.sleep(2)
        yield address
    finally:
        for p in reversed(procs):  # worker first, then head
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)  # our own session: the node's processes only
                    p.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_cells_run_on_both_nodes(two_node_cluster, tmp_path):
    proc = run_cli([*FAKE, "grid.seed=[0,1,2,3,4,5]", "framework.fake.step_sleep_s=0.3",
                    f"runner.address={two_node_cluster}", f"hydra.run.dir={tmp_path}"], timeout=400, **ENV)
    assert proc.returncode == 0, proc.stdout
    df = runs(tmp_path)
    assert len(df) == 6 and set(df.status) == {"ok"}
    assert df.node_id.nunique() == 2  # both CPU-only nodes were slots
    assert "on 2 slot(s)" in proc.stdout
    # One cell per CPU-only node at a time (runner.concurrency = 1).
    for _, node in df.groupby("node_id"):
        spans = sorted((r.start_time, r.end_time) for r in node.itertuples())
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))

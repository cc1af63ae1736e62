"""``python -m runner`` as a user runs it: exit codes, a real Ctrl-C (SIGINT), the printed resume command.

Each test starts its own local Ray in a subprocess (≈ 15–30 s each on a 2-core machine); they stay in
the default run because they are the only tests of the command exactly as a user types it.
"""
from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time

from runner_support import FAKE, cli_env, fragment_ids, frameworks_imported_by, run_cli, runs

from runner import PROJECT_ROOT



def test_a_device_the_cluster_lacks_exits_2_with_one_message(tmp_path):
    proc = run_cli([*FAKE, "grid.device=[gpu]", "runner.num_gpus=0", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 2, proc.stdout
    assert "invalid sweep: grid.device: 'gpu' requested but the cluster has no GPU" in proc.stdout
    assert fragment_ids(tmp_path) == set()


def test_ctrl_c_exits_130_with_a_summary_and_the_printed_command_resumes_exactly_the_rest(tmp_path):
    out = tmp_path / "out"
    args = [*FAKE, "grid.seed=[0,1,2,3,4,5]", "framework.fake.step_sleep_s=0.4", f"hydra.run.dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=PROJECT_ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not fragment_ids(out) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert fragment_ids(out), "no cell finished in time"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    done = fragment_ids(out)
    assert 1 <= len(done) < 6
    assert re.search(rf"interrupted: {len(done)} of 6 cells finished .* {6 - len(done)} missing", output), output
    assert output.count("  missing ") == 6 - len(done)
    command = re.search(r"resume with: (python -m runner .*)", output).group(1).strip()
    # The sweep's definition is saved with it; only how-to-run (runner.*) overrides are repeated.
    assert command == f"python -m runner runner.resume={out} runner.progress=false runner.parity_gate=false"
    assert (out / "sweep.log").read_text().count("resume with:") == 1  # the log file has the summary too

    argv = shlex.split(command)[3:]
    home = tmp_path / "home"  # resumed as on a fresh machine (a new container): no ~/.ray/auth_token
    home.mkdir()
    resumed = run_cli(argv, HOME=str(home))
    assert resumed.returncode == 0, resumed.stdout
    assert f"running the {6 - len(done)} missing" in resumed.stdout
    log = (out / "sweep.log").read_text()  # the full lines (the console says the cell in words)
    started = re.findall(r"start (\w{16}) \(", log[log.rindex("(resume) →"):])
    assert sorted(started) == sorted(set(runs(out).cell_id) - done)  # exactly the missing cells ran
    df = runs(out)
    assert len(df) == 6 and set(df.status) == {"ok"} and df.sweep_id.nunique() == 1


def test_checking_a_real_sweep_before_ray_imports_no_framework(tmp_path):
    code = """
from runner.__main__ import preflight
problem = preflight(["grid.framework=[keras,pytorch]", "data=synthetic", "data.samples_per_class=16",
                     "grid.batch_size=[8]", "model.filters=[4,8]", "grid.device=[cpu]"])
assert problem is None, problem
"""
    assert frameworks_imported_by(code, KVP_CACHE_DIR=str(tmp_path)) == []

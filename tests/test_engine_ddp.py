"""Two-process DDP on CPU (gloo) through the real command line: Lightning launches the second process.

About 15 s on an idle 2-core machine (under a minute when it is busy), so it is part of the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cinet.metrics import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_two_processes_cpu(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in (
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "NODE_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "CINET_RUN_DIR",
    ):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "cinet.cli",
        "train",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--run-dir",
        str(run_dir),
        "trainer.accelerator=cpu",
        "trainer.devices=2",  # strategy auto (the README's line): Lightning's DDP, told of unused parameters
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| cinet |" in proc.stdout
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports
    state = json.loads((run_dir / "state.json").read_text())
    assert state["completed"] == [1, 2, 3] and state["evaluated"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(isinstance(metrics[k], float) for k in METRIC_KEYS)
    assert metrics["num_images"] == 4  # both ranks' shards of the 4 test images, synchronised
    for n in (1, 2, 3):
        assert (run_dir / f"stage{n}" / "last.ckpt").is_file()

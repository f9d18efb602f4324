"""DDP on CPU with Gloo: ``torchrun --nproc_per_node 2 -m contraseg train/eval``.

Two ranks train a few iterations (each reads its own shard of the sample stream, only
rank 0 logs and checkpoints), then the checkpoint is evaluated by two ranks and by one
process: the sharded, all-reduced confusion matrix must equal the single-process one
exactly, on a dataset whose length does not divide by the world size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contraseg.cli import main
from contraseg.engine.run_log import read_jsonl

from helpers import tiny_config, tiny_dataset, write_yaml

REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "contraseg", *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_rank_training_and_sharded_evaluation(tmp_path):
    config = tiny_config(
        name="ddp", train_scenes=8,
        data={"val": [tiny_dataset("synthetic-target", "val", 5), tiny_dataset("synthetic-source", "val", 3)]},
        schedule={"max_iters": 3}, regulariser={"name": "proac"},
        train={"eval_interval": 3, "checkpoint_interval": 3},
        recipe={"paper": "ContrastiveSeg", "world_size": 2, "total_batch_size": 4},
        # The sharded and the one-process evaluations below are compared exactly: both must
        # compute every image the same way, i.e. one image per forward (the same batching) and
        # one intra-op thread (OMP_NUM_THREADS=1 for the ranks, torch.set_num_threads(1) here).
        eval={"batch_size": 1},
    )
    path = write_yaml(tmp_path / "ddp.yaml", config)
    run_dir = tmp_path / "run"

    trained = torchrun("train", str(path), "--run-dir", str(run_dir), "--device", "cpu")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert trained.stdout.count("done: 3 iterations") == 1  # only rank 0 reports
    batch_lines = [line for line in trained.stdout.splitlines() if line.startswith("total batch")]
    assert batch_lines == ["total batch 4 = 2 x 2 processes, as the recipe ContrastiveSeg: 4 = 2 x 2 GPUs"]
    records = read_jsonl(run_dir / "log.jsonl")
    assert [r["iteration"] for r in records if r["type"] == "train"] == [1, 2, 3]  # one writer
    assert [r["dataset"] for r in records if r["type"] == "eval"] == ["synthetic-target/val", "synthetic-source/val"]
    state = torch.load(run_dir / "last.pth", weights_only=True)
    assert state["iteration"] == 3
    assert len(state["rng"]) == 2  # every rank's generators, for an exact resume
    assert state["sampler"]["position"] == 3 * 2 * 2  # iterations x batch x ranks
    assert not any(key.startswith("module.") for key in state["model"])  # the unwrapped model is saved

    checkpoint = str(run_dir / "last.pth")
    sharded = torchrun("eval", checkpoint, "--out", str(tmp_path / "ddp.json"), "--device", "cpu",
                       "--num-workers", "0")
    assert sharded.returncode == 0, sharded.stdout + sharded.stderr
    assert sharded.stdout.count("synthetic-target/val: mIoU") == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the single-threaded ranks
    try:
        assert main(["eval", checkpoint, "--out", str(tmp_path / "one.json"), "--device", "cpu",
                     "--num-workers", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    two = json.loads((tmp_path / "ddp.json").read_text())["results"]
    one = json.loads((tmp_path / "one.json").read_text())["results"]
    assert two.keys() == one.keys() == {"synthetic-target/val", "synthetic-source/val"}
    for name in one:
        assert two[name]["confusion"] == one[name]["confusion"]
        assert two[name]["mIoU"] == one[name]["mIoU"]
        assert two[name]["pixels"] == one[name]["pixels"] == (5 if "target" in name else 3) * 32 * 64
    # the evaluation at the end of training (two ranks) saw the same pixels
    final = json.loads((run_dir / "eval" / "iter_00000003.json").read_text())["results"]
    assert final["synthetic-target/val"]["confusion"] == one["synthetic-target/val"]["confusion"]

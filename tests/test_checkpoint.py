"""Checkpoints: atomic writes, pickle-free loading, clear errors, RNG state, and a
training run killed with SIGKILL that resumes to bit-identical weights.

Run as a script (``python tests/test_checkpoint.py CONFIG RUN_DIR [--resume auto]``)
this file is the child training process of the kill test: it registers
``slow-synthetic-source`` (synthetic-source that sleeps ``SLOW_SAMPLE_SECONDS`` per
sample, so the parent has time to kill it between checkpoints) and runs
``contraseg train``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from contraseg.engine.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint, save_checkpoint
from contraseg.engine.rng import capture_rng_state, restore_rng_state, seed_everything, seeded_rng

from helpers import tiny_config, write_yaml

REPO = Path(__file__).resolve().parents[1]


def minimal_state(**extra):
    return {"iteration": 1, "config": "name: x\n", "model_config": {"num_classes": 2},
            "model": {"w": torch.arange(4.0)}, **extra}


# ------------------------------------------------------------------ atomic write
def test_save_and_load_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "c.pth"
    save_checkpoint(minimal_state(rng=[capture_rng_state()]), path)
    raw = torch.load(path, weights_only=True)  # no pickled objects inside
    assert raw["format"] == "contraseg-checkpoint" and raw["version"] == 1
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["w"], torch.arange(4.0))
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_a_crash_mid_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint(minimal_state(), path)
    old_bytes = path.read_bytes()

    def crashing_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(minimal_state(iteration=2), path)
    assert path.read_bytes() == old_bytes
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_atomic_save_replaces_the_target(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    atomic_torch_save({"a": 1}, path)
    atomic_torch_save({"a": 2}, path)
    assert torch.load(path, weights_only=True) == {"a": 2}


class NotPlainData:
    """A class a weights_only load must refuse to unpickle."""

    value = 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a checkpoint at all", r"bad.pth: not a readable checkpoint \(not a torch-saved file"),
        ("truncated", r"bad.pth: not a readable checkpoint \(truncated or corrupt \(not a complete zip archive\)\)$"),
        ({"model": {}}, r"bad.pth: not a contraseg checkpoint \(no format='contraseg-checkpoint' key\)"),
        ([1, 2], r"bad.pth: not a contraseg checkpoint"),
        ({"format": "contraseg-checkpoint", "version": 99}, r"bad.pth: checkpoint version 99, this contraseg reads 1"),
        ({"format": "contraseg-checkpoint", "version": 1, "iteration": 0},
         r"bad.pth: checkpoint lacks keys config, model_config, model"),
        ("object", r"bad.pth: not a readable checkpoint \(holds pickled Python objects \([\w.]*NotPlainData\) "
                   r"that loading without running code refuses\)$"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        save_checkpoint(minimal_state(), path)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "object":
        torch.save({"format": "contraseg-checkpoint", "thing": NotPlainData()}, path)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*none.pth"):
        load_checkpoint(tmp_path / "none.pth")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"run is a folder, not a checkpoint file \(it holds last.pth\)$"):
        load_checkpoint(tmp_path / "run")


def test_load_error_reasons_are_whole_sentences_without_torch_advice():
    from contraseg.load_errors import describe_load_error

    long = RuntimeError("First sentence. " + "word " * 100)
    assert describe_load_error(long) == "RuntimeError: First sentence"
    cut = describe_load_error(RuntimeError("x" * 10 + " " + "y " * 200))
    assert cut.startswith("RuntimeError: xxxxxxxxxx y y") and cut.endswith(" y ...")  # cut between words
    assert len(cut) <= len("RuntimeError: ") + 200 + 4 and "  " not in cut
    for text in ("Weights only load failed. ... weights_only ... weights_only=False ... GLOBAL a.B was not ...",):
        reason = describe_load_error(RuntimeError(text.replace("GLOBAL", "Unsupported global: GLOBAL")))
        assert reason == "holds pickled Python objects (a.B) that loading without running code refuses"
        assert "weights_only" not in reason


# ------------------------------------------------------------------ RNG state
def draws():
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    torch.manual_seed(3)
    save_checkpoint(minimal_state(rng=[capture_rng_state()]), tmp_path / "r.pth")
    expected = draws()
    draws()  # move everything on
    restore_rng_state(load_checkpoint(tmp_path / "r.pth")["rng"][0])
    assert draws() == expected


def test_seeded_rng_restores_the_outer_state():
    seed_everything(0)
    with seeded_rng(7):
        inner = draws()
    after = draws()
    seed_everything(0)
    assert draws() == after  # as if the seeded block had not run
    with seeded_rng(7):
        assert draws() == inner


# ------------------------------------------------------------------ kill and resume
def run_config(tmp_path: Path) -> Path:
    """The shared tiny config on slow-synthetic-source with the memory regulariser, 8
    iterations (2 of warm-up), evaluated every 3 and saved every 2."""
    config = tiny_config(
        name="resume",
        data={"train": {"name": "slow-synthetic-source", "options": {"length": 6}}, "crop_size": [32, 48]},
        schedule={"max_iters": 8, "warmup_iters": 2},
        regulariser={"name": "pixel_contrast_memory", "max_samples": 64, "max_views": 8,
                     "memory_pixel_size": 16, "memory_segment_size": 8},
        train={"seed": 5, "eval_interval": 3},
    )
    return write_yaml(tmp_path / "resume.yaml", config)


def child(config: Path, run_dir: Path, *extra: str, slow: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "SLOW_SAMPLE_SECONDS": str(slow), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, str(config), str(run_dir), *extra], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_iteration(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["iteration"])
    except Exception:  # noqa: BLE001 - not written yet
        return None


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    config = run_config(tmp_path)
    # A: uninterrupted (started first, runs alongside B).
    run_a = child(config, tmp_path / "a")
    # B: slowed down, SIGKILLed as soon as a checkpoint exists, then resumed.
    run_b = child(config, tmp_path / "b", slow=0.3)
    last = tmp_path / "b" / "last.pth"
    deadline = time.monotonic() + 120
    while checkpoint_iteration(last) is None:
        assert run_b.poll() is None, run_b.stdout.read()
        assert time.monotonic() < deadline, "run B wrote no checkpoint"
        time.sleep(0.05)
    os.kill(run_b.pid, signal.SIGKILL)
    run_b.wait()
    assert run_b.returncode == -signal.SIGKILL
    killed_at = checkpoint_iteration(last)
    assert killed_at is not None and 2 <= killed_at < 8, killed_at  # the kill really cut the run short
    resumed = child(config, tmp_path / "b", "--resume", "auto")
    out_resumed, _ = resumed.communicate(timeout=240)
    out_a, _ = run_a.communicate(timeout=240)
    assert run_a.returncode == 0, out_a
    assert resumed.returncode == 0, out_resumed
    assert f"resumed from {last} at iteration {killed_at}" in out_resumed

    a = torch.load(tmp_path / "a" / "last.pth", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["iteration"] == b["iteration"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["regulariser"]:  # the memory bank too
        assert torch.equal(a["regulariser"][key], b["regulariser"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for index, slot in a["optimizer"]["state"].items():
        assert torch.equal(slot["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["sampler"] == b["sampler"] and a["best"] == b["best"]
    # the log reads like one run: every iteration logged exactly once
    from contraseg.engine.run_log import read_jsonl

    for run in ("a", "b"):
        train = [r["iteration"] for r in read_jsonl(tmp_path / run / "log.jsonl") if r["type"] == "train"]
        assert train == list(range(1, 9)), (run, train)
    losses = lambda run: [r["loss"] for r in read_jsonl(tmp_path / run / "log.jsonl") if r["type"] == "train"]
    assert losses("a") == losses("b")


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    from contraseg.engine.config import config_from_dict
    from contraseg.engine.trainer import Trainer

    raw = yaml.safe_load(run_config(tmp_path).read_text())
    raw["data"]["train"]["name"] = "synthetic-source"
    raw["schedule"] = {"max_iters": 1}
    raw["regulariser"] = {"name": "none"}
    first = Trainer(config_from_dict(raw), tmp_path / "run", progress=False)
    first.fit()
    raw["model"]["embed_dim"] = 8
    with pytest.raises(ValueError, match=r"last.pth: checkpoint model .*'embed_dim': 16.* differs from the config's"):
        Trainer(config_from_dict(raw), tmp_path / "run", resume="auto", progress=False)


if __name__ == "__main__":
    from contraseg.cli import main
    from contraseg.data import register_dataset
    from contraseg.data.synthetic import SyntheticSourceDataset

    @register_dataset("slow-synthetic-source")
    class SlowSyntheticSource(SyntheticSourceDataset):
        """synthetic-source that sleeps SLOW_SAMPLE_SECONDS per sample."""

        def __getitem__(self, index):
            time.sleep(float(os.environ.get("SLOW_SAMPLE_SECONDS", "0")))
            return super().__getitem__(index)

    config_path, run_dir, *rest = sys.argv[1:]
    sys.exit(main(["train", config_path, "--run-dir", run_dir, "--device", "cpu", *rest]))

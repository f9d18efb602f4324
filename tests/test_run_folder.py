"""One writer per run folder (lock), no leftovers after a failed start, and a real full disk
while checkpointing (torch's zip writer hides ENOSPC in a RuntimeError)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from contraseg.cli import main
from contraseg.engine.config_io import merge_dicts
from contraseg.engine.run_lock import LOCK_NAME, RunFolderBusy, RunLock

from helpers import tiny_config, write_yaml

SRC = str(Path(__file__).resolve().parents[1] / "src")


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished tiny run: (config, run dir)."""
    root = tmp_path_factory.mktemp("runfolder")
    config = write_yaml(root / "tiny.yaml", tiny_config(model={"embed_dim": 8}))
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return config, root / "run"


def hold_lock_in_child(run_dir: Path) -> subprocess.Popen:
    """A second process that takes the run folder's lock, says so, then waits for stdin."""
    code = textwrap.dedent(f"""
        import sys
        from contraseg.engine.run_lock import RunLock
        with RunLock({str(run_dir)!r}):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


# ------------------------------------------------------------------ the lock
def test_a_second_writer_is_refused_while_the_first_lives(run, tmp_path, capsys):
    config, _ = run
    run_dir = tmp_path / "busy"
    child = hold_lock_in_child(run_dir)
    try:
        assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
        err = one_line(capsys)
        assert err.startswith(f"contraseg train: error: run folder {run_dir} is in use by another run (pid {child.pid} on "
                              f"{socket.gethostname()}, started ")
        assert err.endswith("wait for it to finish, or choose another --run-dir")
        assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--overwrite"]) == 2
        assert "is in use by another run" in one_line(capsys)  # refused before --overwrite deletes anything
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]
    finally:
        child.communicate("\n", timeout=30)
    assert not run_dir.exists()  # the holder created the folder, used nothing: gone with its lock
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0  # free again
    assert not (run_dir / LOCK_NAME).exists() and (run_dir / "last.pth").is_file()  # released on exit


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_run_takes(run, tmp_path):
    config, _ = run
    run_dir = tmp_path / "stale"
    child = hold_lock_in_child(run_dir)
    child.kill()
    child.wait()
    record = json.loads((run_dir / LOCK_NAME).read_text())
    assert record["pid"] == child.pid  # the dead process's lock file is still there
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert not (run_dir / LOCK_NAME).exists()


def test_without_flock_the_record_decides(tmp_path, monkeypatch):
    import contraseg.engine.run_lock as run_lock

    monkeypatch.setattr(run_lock, "fcntl", None)
    run_dir = tmp_path / "nfs"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with RunLock(run_dir) as lock:  # a dead pid of this host: stale, taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "x"}))
    with pytest.raises(RunFolderBusy, match=f"pid {os.getppid()} on"):
        RunLock(run_dir).acquire()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host", "started": "x"}))
    with pytest.raises(RunFolderBusy, match="on another-host"):  # another host's pid cannot be checked
        RunLock(run_dir).acquire()


def test_the_lock_file_does_not_make_a_folder_non_empty_for_resume_or_overwrite(run, tmp_path):
    config, _ = run
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text("{}")  # a stale record left behind (no flock held)
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 0


# ------------------------------------------------------------------ failed starts
def test_a_failed_fresh_start_leaves_no_config_behind(tmp_path, capsys):
    raw = tiny_config(model={"embed_dim": 8, "pretrained": str(tmp_path / "truncated.pth")})
    (tmp_path / "truncated.pth").write_bytes(b"PK\x03\x04 not a whole zip")
    config = write_yaml(tmp_path / "bad.yaml", raw)
    run_dir = tmp_path / "r"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    assert "truncated.pth" in one_line(capsys)
    assert not run_dir.exists()


# ------------------------------------------------------------------ full disk
def test_torch_writer_error_is_recognised_as_a_full_disk(run, tmp_path, capsys, monkeypatch):
    import contraseg.engine.checkpoint as checkpoint
    import contraseg.engine.disk_space as disk_space

    config, source = run
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    old = (run_dir / "last.pth").read_bytes()
    real_save = torch.save

    def zip_writer_on_a_full_disk(obj, handle):
        handle.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", zip_writer_on_a_full_disk)
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 4096)
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--resume", "auto",
                 "--set", "schedule.max_iters=3", "--resume-changed"]) == 2
    assert one_line(capsys) == f"contraseg train: error: {run_dir / 'last.pth'}: No space left on device"
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert (run_dir / "last.pth").read_bytes() == old and not list(run_dir.glob(".*.tmp"))
    assert not (run_dir / LOCK_NAME).exists()


def test_other_torch_writer_errors_keep_their_traceback(tmp_path, monkeypatch):
    import contraseg.engine.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, handle: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # plenty of room: not a disk problem
        checkpoint.atomic_torch_save({"x": 1}, tmp_path / "x.pth")


def test_probe_write_reports_the_real_errno(tmp_path, monkeypatch):
    from contraseg.engine import disk_space

    assert disk_space.probe_write(tmp_path) is None and not list(tmp_path.iterdir())
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: None)
    monkeypatch.setattr(disk_space, "probe_write", lambda folder: OSError(errno.EDQUOT, "Disk quota exceeded"))
    real = disk_space.explain_write_failure(RuntimeError("[enforce fail at inline_container.cc:1] x"), tmp_path / "a.pth")
    assert real.errno == errno.EDQUOT and real.filename == str(tmp_path / "a.pth")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of a given size (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def make(size_bytes: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_real_full_disk_while_checkpointing_is_one_line_and_keeps_the_old_checkpoint(run, small_tmpfs, capsys):
    config, source = run
    used = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    checkpoint_size = (source / "last.pth").stat().st_size
    disk = small_tmpfs(used + checkpoint_size // 2 + (1 << 20))  # room for the run, not a second last.pth
    run_dir = disk / "run"
    shutil.copytree(source, run_dir)
    old = (run_dir / "last.pth").read_bytes()
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--resume", "auto",
                 "--set", "schedule.max_iters=3", "--resume-changed"]) == 2
    assert one_line(capsys) == f"contraseg train: error: {run_dir / 'last.pth'}: No space left on device"
    assert (run_dir / "last.pth").read_bytes() == old
    assert torch.load(run_dir / "last.pth", weights_only=True)["iteration"] == 2
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / LOCK_NAME).exists()


def adapt_config(folder: Path, init: Path) -> Path:
    raw = merge_dicts(tiny_config(model={"embed_dim": 8}),
                      {"schedule": {"max_iters": 1},
                       "train": {"log_interval": 1, "eval_interval": 1, "checkpoint_interval": 1},
                       "adapt": {"method": "source_only", "init_checkpoint": str(init)}})
    return write_yaml(folder / "adapt.yaml", raw)


def test_adapt_takes_the_lock_and_a_failed_start_leaves_nothing(run, tmp_path, capsys):
    _, source = run
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((source / "last.pth").read_bytes()[:5000])
    run_dir = tmp_path / "a"
    assert main(["adapt", str(adapt_config(tmp_path, truncated)), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    assert "truncated.pth" in one_line(capsys)
    assert not run_dir.exists()  # no config.yaml left to refuse the corrected rerun
    good = adapt_config(tmp_path, source / "last.pth")
    child = hold_lock_in_child(run_dir)
    try:
        assert main(["adapt", str(good), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
        assert f"contraseg adapt: error: run folder {run_dir} is in use by another run (pid {child.pid}" in one_line(capsys)
    finally:
        child.communicate("\n", timeout=30)
    assert main(["adapt", str(good), "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert (run_dir / "last.pth").is_file() and not (run_dir / LOCK_NAME).exists()

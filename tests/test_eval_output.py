"""``eval``'s JSON: the settings recorded, a short default name per settings, no silent
replacement of another evaluation, and the output folder checked before the work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from contraseg.cli import main

from helpers import tiny_config, write_yaml


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalout")
    config = write_yaml(root / "tiny.yaml", tiny_config(model={"embed_dim": 8}, schedule={"max_iters": 1},
                                                        train={"eval_interval": 1, "checkpoint_interval": 1}))
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return root / "run" / "last.pth"


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_settings_are_recorded_and_other_settings_get_another_file(checkpoint, tmp_path, capsys):
    copy = tmp_path / "last.pth"
    shutil.copy(checkpoint, copy)
    base = ["eval", str(copy), "--device", "cpu", "--num-workers", "0"]
    assert main(base) == 0
    assert main(base + ["--mode", "slide", "--crop-size", "16", "32", "--stride", "8", "16", "--flip",
                        "--scales", "0.5", "1.0"]) == 0
    files = sorted(tmp_path.glob("last.pth.eval.*.json"))
    assert len(files) == 2 and all(len(f.name) <= 48 for f in files)
    records = [json.loads(f.read_text()) for f in files]
    slide = next(r for r in records if r["inference"]["mode"] == "slide")
    whole = next(r for r in records if r["inference"]["mode"] == "whole")
    assert slide["inference"] == {"mode": "slide", "scales": [0.5, 1.0], "flip": True, "resize": None,
                                  "batch_size": 1, "crop_size": [16, 32], "stride": [8, 16]}
    assert whole["inference"]["flip"] is False and "crop_size" not in whole["inference"]
    assert whole["datasets"] == [{"name": "synthetic-target", "split": "val", "root": None,
                                  "options": {"length": 2, "size": [32, 64]}}]
    before = {f: f.read_bytes() for f in files}
    assert main(base) == 0  # the same settings again: the same file, the same numbers
    assert sorted(tmp_path.glob("last.pth.eval.*.json")) == files
    out = tmp_path / "m.json"
    assert main(base + ["--out", str(out)]) == 0
    assert main(base + ["--out", str(out), "--flip"]) == 2
    assert one_line(capsys).endswith(f"{out} holds an evaluation of other settings (flip False -> True): "
                                     f"choose another --out, or pass --overwrite to replace it")
    assert main(base + ["--out", str(out), "--flip", "--overwrite"]) == 0
    assert json.loads(out.read_text())["inference"]["flip"] is True
    assert all(f.read_bytes() == data for f, data in before.items())


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only folder: a read-only tmpfs as root (root ignores permissions), else chmod."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder, lambda: None
        folder.chmod(0o700)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield folder, lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_checkpoint_folder_fails_before_the_evaluation(checkpoint, read_only_folder, capsys):
    folder, make_read_only = read_only_folder
    shutil.copy(checkpoint, folder / "last.pth")
    make_read_only()
    assert main(["eval", str(folder / "last.pth"), "--device", "cpu", "--num-workers", "0"]) == 2
    captured = capsys.readouterr()
    assert "eval synthetic-target/val" not in captured.out  # nothing was evaluated
    err = captured.err.strip()
    assert err.startswith(f"contraseg eval: error: cannot write the metrics file {folder / 'last.pth'}.eval.")
    assert err.endswith("(choose a writable --out)") and ("Read-only" in err or "Permission denied" in err)

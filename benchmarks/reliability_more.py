"""The cases of issue 21 for ``benchmarks/reliability_table.py``: run-folder locks, a real full
disk (a small tmpfs, root only), failed adapt starts, eval settings, out-of-range labels,
folder trees for predict, checkpoint and config messages.

Cases that need another process alive (a second writer) or a filesystem (tmpfs) use
``Case.before`` (a setup returning a note, or ``"SKIP: why"``) and ``Case.after`` (cleanup).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from PIL import Image

RUNNING: dict[str, subprocess.Popen] = {}


def start_training(work: Path, env: dict[str, str], run_dir: str, ready: str = "[2/100000]") -> subprocess.Popen:
    """``contraseg train long.yaml --run-dir RUN_DIR`` in the background, once it printed ``ready``."""
    proc = subprocess.Popen([sys.executable, "-m", "contraseg", "train", "long.yaml", "--run-dir", run_dir,
                             "--device", "cpu"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if ready in line:
            break
    return proc


def mount_tmpfs(point: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes at ``point``; None, or why it could not."""
    if os.geteuid() != 0:
        return "needs root"
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else done.stderr.strip() or "mount failed"


def unmount(point: Path) -> None:
    subprocess.run(["umount", str(point)], capture_output=True)


def prepare_more(work: Path, tiny: dict[str, Any]) -> None:
    """Inputs of the issue-21 cases."""
    adapt = yaml.safe_load(yaml.safe_dump(tiny))
    adapt["adapt"] = {"method": "source_only", "init_checkpoint": "truncated_run.pth"}
    (work / "adapt_bad.yaml").write_text(yaml.safe_dump(adapt))
    adapt["adapt"]["init_checkpoint"] = "run/last.pth"
    (work / "adapt_ok.yaml").write_text(yaml.safe_dump(adapt))
    data = (work / "run" / "last.pth").read_bytes()
    (work / "truncated_run.pth").write_bytes(data[: len(data) // 3])
    (work / "bad.yaml").write_text("name: x\nmodel:\n  backbone: resnet18\n  head: [mlp\noptim: {lr: 1}\n")
    bad = work / "cs200"
    shutil.copytree(work / "cs", bad)
    label = sorted((bad / "gtFine" / "val").rglob("*.png"))[0]
    values = np.asarray(Image.open(label)).copy()
    values[3, 4] = 200
    Image.fromarray(values).save(label)
    images = work / "imgs" / "city"
    images.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(images / f"{name}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")


def full_disk(work: Path) -> str:
    """run/ copied onto a tmpfs with room for it but not for a second last.pth."""
    used = sum(p.stat().st_size for p in (work / "run").rglob("*") if p.is_file())
    size = used + (work / "run" / "last.pth").stat().st_size // 2 + (1 << 20)
    why = mount_tmpfs(work / "disk", size)
    if why:
        return f"SKIP: {why}"
    shutil.copytree(work / "run", work / "disk" / "run")
    return f"run/ copied onto a {size / 2**20:.0f} MiB tmpfs"


def read_only_checkpoint(work: Path) -> str:
    why = mount_tmpfs(work / "ro", 512 << 20)
    if why:
        return f"SKIP: {why}"
    shutil.copy(work / "run" / "last.pth", work / "ro" / "last.pth")
    subprocess.run(["mount", "-o", "remount,ro", str(work / "ro")], check=True)
    return "ro/ is a read-only tmpfs"


def busy(work: Path, env: dict[str, str]) -> str:
    RUNNING["busy"] = start_training(work, env, "r6")
    return "another train is writing r6"


def stop_busy(work: Path) -> None:
    proc = RUNNING.pop("busy")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)


def killed(work: Path, env: dict[str, str]) -> str:
    proc = start_training(work, env, "r7")
    proc.kill()
    proc.wait()
    lock = work / "r7" / ".contraseg.lock"
    return f"its train was SIGKILLed, {lock.name} left behind: {lock.exists()}"


def more_cases(case: Callable[..., Any], env: dict[str, str]) -> list[Any]:
    ckpt = "run/last.pth"
    return [
        case("a second train into a run folder another train is writing", ["train", "tiny.yaml", "--run-dir", "r6"],
             2, before=lambda w: busy(w, env), after=stop_busy),
        case("train --overwrite into a folder whose train was SIGKILLed (stale lock)",
             ["train", "tiny.yaml", "--run-dir", "r7", "--overwrite"], 0, before=lambda w: killed(w, env)),
        case("a real full disk while writing last.pth (torch's zip writer raises RuntimeError)",
             ["train", "tiny.yaml", "--run-dir", "disk/run", "--resume", "auto", "--set", "schedule.max_iters=3",
              "--resume-changed"], 2, before=full_disk, after=lambda w: unmount(w / "disk")),
        case("adapt with a truncated init checkpoint (then: is r8 left behind?)",
             ["adapt", "adapt_bad.yaml", "--run-dir", "r8"], 2, gone="r8"),
        case("eval --out m.json (first settings)", ["eval", ckpt, "--out", "m.json", "--num-workers", "0"], 0),
        case("eval --out m.json again with other settings (--flip)",
             ["eval", ckpt, "--out", "m.json", "--num-workers", "0", "--flip"], 2),
        case("eval with the checkpoint in a read-only folder (default output beside it)",
             ["eval", "ro/last.pth", "--num-workers", "0"], 2, before=read_only_checkpoint,
             after=lambda w: unmount(w / "ro")),
        case("eval: label value 200 in a Cityscapes labelIds PNG",
             ["eval", ckpt, "--dataset", "cityscapes", "--root", "cs200", "--num-workers", "0"], 2),
        case("datasets check: the same label value 200", ["datasets", "check", "cs200", "--dataset", "cityscapes",
                                                          "--split", "val"], 2),
        case("predict on a Cityscapes tree (leftImg8bit/val, city subfolders)",
             ["predict", ckpt, "cs/leftImg8bit/val", "--out", "pred_tree", "--format", "labelid"], 0),
        case("predict: an unreadable image in the folder", ["predict", ckpt, "imgs", "--out", "pred2"], 2),
        case("predict rerun with --skip-unreadable (continues, no --overwrite)",
             ["predict", ckpt, "imgs", "--out", "pred2", "--skip-unreadable"], 0),
        case("a run folder given as the checkpoint", ["eval", "run", "--num-workers", "0"], 2),
        case("a truncated checkpoint", ["eval", "truncated_run.pth", "--num-workers", "0"], 2),
        case("several config errors at once", ["train", "tiny.yaml", "--run-dir", "r9", "--set",
                                               "schedule.warmup_iters=5", "--set", "optim.lrr=1",
                                               "--set", "data.jitter=2"], 2),
        case("malformed YAML", ["train", "bad.yaml"], 2),
        case("pixel contrast whose classes never exceed max_views in an image (no anchor)",
             ["train", "tiny.yaml", "--run-dir", "r11", "--set", "regulariser.name=pixel_contrast",
              "--set", "regulariser.max_views=100"], 0, grep="PixelContrastLoss"),
        case("progress line of a ProAC run", ["train", "tiny.yaml", "--run-dir", "r12", "--set",
                                              "regulariser.name=proac"], 0, grep="[2/2]"),
        case("which set picks best.pth (train.best_on: auto)", ["train", "tiny.yaml", "--run-dir", "r13"], 0,
             grep="model selection"),
        case("adaptation without train.best_on", ["adapt", "adapt_ok.yaml", "--run-dir", "r14"], 0,
             grep="model selection"),
        case("train.best_on naming no val set", ["train", "tiny.yaml", "--run-dir", "r10", "--set",
                                                 "train.best_on=cityscapes/val"], 2),
    ]

"""Try every bad input and fault of issues 12 and 21 on the real command line; write docs/reliability.md.

    python benchmarks/reliability_table.py [--out docs/reliability.md] [--keep DIR]

Each case runs ``python -m contraseg ...`` as a subprocess in a scratch folder (a tiny
synthetic run is trained first) and records the exit code and the message: the last
stderr line for a failure, the last stdout line for a success. Faults that need code
injection (a full disk) run the same CLI entry point under a small wrapper that makes
``torch.save`` fail. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
SIZE = [32, 64]
TINY = {
    "name": "tiny",
    "model": {"backbone": "resnet18", "head": "mlp", "embed_dim": 8, "output_stride": 8},
    "data": {
        "train": {"name": "synthetic-source", "split": "train", "options": {"size": SIZE, "length": 4}},
        "val": [{"name": "synthetic-target", "split": "val", "options": {"size": SIZE, "length": 2}}],
        "crop_size": SIZE, "batch_size": 2, "num_workers": 0,
    },
    "schedule": {"max_iters": 2},
    "train": {"log_interval": 1, "eval_interval": 2, "checkpoint_interval": 2, "tensorboard": False},
}
FULL_DISK = (
    "import errno, sys, torch\n"
    "real = torch.save\n"
    "def full(obj, handle):\n"
    "    real({'partial': torch.zeros(10)}, handle)\n"
    "    raise OSError(errno.ENOSPC, 'No space left on device', handle.name)\n"
    "torch.save = full\n"
    "from contraseg.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@dataclass
class Case:
    what: str  # the bad input or fault
    argv: list[str]  # contraseg arguments
    expect: int  # the exit code we require
    signal_after: str | None = None  # send SIGINT/SIGTERM once stdout shows this text
    signum: int = signal.SIGINT
    wrapper: str | None = None  # python code run instead of `-m contraseg`
    shown: str | None = None  # the command as shown in the table (default: argv)
    stale: str | None = None  # a stray temp file created before the run; the table says whether it is gone
    before: Any = None  # setup(work) -> a note for the table, or "SKIP: why" (reliability_more)
    after: Any = None  # cleanup(work)
    gone: str | None = None  # a path the failed command must not leave behind
    grep: str | None = None  # show the first output line (stdout, then stderr) holding this text


def contraseg(argv: list[str], cwd: Path, case: Case) -> tuple[int, str, str]:
    command = [sys.executable, "-c", case.wrapper, *argv] if case.wrapper else [sys.executable, "-m", "contraseg", *argv]
    if case.signal_after is None:
        done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
        return done.returncode, done.stdout, done.stderr
    proc = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if case.signal_after in line:
            proc.send_signal(case.signum)
            break
    out, err = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + out, err


def write_cityscapes(root: Path, split: str = "val", count: int = 2, label_folder: str = "gtFine") -> Path:
    """A tiny Cityscapes tree (random labelIds 0..33)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        name = f"aachen_{i:06d}_000019"
        image = root / "leftImg8bit" / split / "aachen" / f"{name}_leftImg8bit.png"
        label = root / label_folder / split / "aachen" / f"{name}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(image)
        Image.fromarray(rng.integers(0, 34, SIZE, dtype=np.uint8)).save(label)
    return root


def prepare(work: Path) -> dict[str, str]:
    """Scratch inputs: the tiny config and run, broken files and folders."""
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    long = json.loads(json.dumps(TINY))
    long["schedule"]["max_iters"] = 100000
    long["train"].update(eval_interval=100000, checkpoint_interval=100000)
    (work / "long.yaml").write_text(yaml.safe_dump(long))
    trained = subprocess.run([sys.executable, "-m", "contraseg", "train", "tiny.yaml", "--run-dir", "run",
                              "--device", "cpu"], cwd=work, env=ENV, capture_output=True, text=True)
    if trained.returncode:
        raise SystemExit(f"training the tiny run failed:\n{trained.stderr}")
    write_cityscapes(work / "cs")
    write_cityscapes(work / "cs_misnamed", label_folder="gtfine")
    (work / "cs_empty" / "leftImg8bit" / "val").mkdir(parents=True)
    (work / "cs_empty" / "gtFine" / "val").mkdir(parents=True)
    truncated = write_cityscapes(work / "cs_truncated", split="train")
    label = next((truncated / "gtFine" / "train").rglob("*.png"))
    label.write_bytes(label.read_bytes()[:60])
    mismatch = write_cityscapes(work / "cs_mismatch")
    label = next((mismatch / "gtFine" / "val").rglob("*.png"))
    Image.fromarray(np.zeros((SIZE[0], SIZE[1] + 8), dtype=np.uint8)).save(label)
    (work / "a_file").write_text("a file, not a folder")
    for folder in ("pl", "weak", "pred"):
        (work / folder).mkdir()
        (work / folder / "old.png").write_bytes(b"earlier output")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(work / "img.png")
    weights = work / "truncated.pth"
    import torch

    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, weights)
    weights.write_bytes(weights.read_bytes()[:100])
    from reliability_more import prepare_more

    prepare_more(work, TINY)
    return {"ckpt": "run/last.pth"}


def cases() -> list[Case]:
    from reliability_more import more_cases

    ckpt = "run/last.pth"
    synth = ["--option", "length=2", "--option", "size=[32,64]"]
    cs_train = ["--set", "data.train.name=cityscapes", "--set", "data.train.options={}", "--set", "data.num_workers=1"]
    return [
        Case("train into a folder holding a finished run, no --resume", ["train", "tiny.yaml", "--run-dir", "run"], 2),
        Case("resume with a changed training key", ["train", "tiny.yaml", "--run-dir", "run", "--resume", "auto",
                                                    "--set", "optim.lr=0.05"], 2),
        Case("--resume and --overwrite together", ["train", "tiny.yaml", "--run-dir", "run", "--resume", "auto",
                                                   "--overwrite"], 2),
        Case("pseudo-label into a non-empty folder", ["pseudo-label", ckpt, "--dataset", "synthetic-target", *synth,
                                                      "--out", "pl"], 2),
        Case("weak-labels into a non-empty folder", ["weak-labels", "--kind", "point", "--dataset", "synthetic-target",
                                                     *synth, "--out", "weak"], 2),
        Case("predict into a non-empty folder", ["predict", ckpt, "img.png", "--out", "pred"], 2),
        Case("datasets check: label folder misnamed (gtfine)", ["datasets", "check", "cs_misnamed", "--dataset",
                                                                "cityscapes", "--split", "val"], 2),
        Case("datasets check: split with 0 images", ["datasets", "check", "cs_empty", "--dataset", "cityscapes",
                                                     "--split", "val"], 2),
        Case("train: label folder misnamed", ["train", "tiny.yaml", "--run-dir", "r1", *cs_train,
                                              "--set", "data.train.root=cs_misnamed", "--set", "data.train.split=val"], 2),
        Case("eval: label folder misnamed (no labelled pixel)", ["eval", ckpt, "--dataset", "cityscapes", "--root",
                                                                 "cs_misnamed", "--num-workers", "0"], 2),
        Case("eval: split with 0 images", ["eval", ckpt, "--dataset", "cityscapes", "--root", "cs_empty"], 2),
        Case("train: truncated label PNG read in a DataLoader worker",
             ["train", "tiny.yaml", "--run-dir", "r2", *cs_train, "--set", "data.train.root=cs_truncated",
              "--set", "data.train.split=train"], 2),
        Case("eval: label size differs from its image (DataLoader worker)",
             ["eval", ckpt, "--dataset", "cityscapes", "--root", "cs_mismatch", "--num-workers", "1"], 2),
        Case("pseudo-label: truncated label PNG (DataLoader worker)",
             ["pseudo-label", ckpt, "--dataset", "cityscapes", "--root", "cs_truncated", "--num-workers", "1",
              "--out", "pl2"], 2),
        Case("dataset option typo", ["train", "tiny.yaml", "--run-dir", "r3", "--set", "data.train.options.lenght=5"], 2),
        Case("dataset that needs a root, without one", ["train", "tiny.yaml", "--run-dir", "r3",
                                                        "--set", "data.train.name=cityscapes",
                                                        "--set", "data.train.options={}"], 2),
        Case("--set list index out of range", ["train", "tiny.yaml", "--run-dir", "r3",
                                               "--set", "data.val[3].options.length=4"], 2),
        Case("model.pretrained: truncated file", ["train", "tiny.yaml", "--run-dir", "r3",
                                                  "--set", "model.pretrained=truncated.pth"], 2),
        Case("train --run-dir under a file", ["train", "tiny.yaml", "--run-dir", "a_file/run"], 2),
        Case("eval --out under a file", ["eval", ckpt, "--out", "a_file/m.json", "--num-workers", "0"], 2),
        Case("predict --out under a file", ["predict", ckpt, "img.png", "--out", "a_file/pred"], 2),
        Case("pseudo-label --out under a file", ["pseudo-label", ckpt, "--dataset", "synthetic-target", *synth,
                                                 "--out", "a_file/pl"], 2),
        Case("weak-labels --out under a file", ["weak-labels", "--kind", "image", "--dataset", "synthetic-target",
                                                *synth, "--out", "a_file/weak"], 2),
        Case("prototypes make --out under a file", ["prototypes", "make", "--classes", "4", "--dim", "8",
                                                    "--out", "a_file/p.pt"], 2),
        Case("viz curves --out under a file", ["viz", "curves", "run", "--out", "a_file/curves.png"], 2),
        Case("full disk while writing last.pth (torch.save raises ENOSPC)",
             ["train", "tiny.yaml", "--run-dir", "run", "--resume", "auto", "--set", "schedule.max_iters=3",
              "--resume-changed"], 2, wrapper=FULL_DISK),
        Case("Ctrl-C (SIGINT) during training", ["train", "long.yaml", "--run-dir", "r4"], 130,
             signal_after="[2/100000]"),
        Case("SIGTERM during training", ["train", "long.yaml", "--run-dir", "r5"], 143,
             signal_after="[2/100000]", signum=signal.SIGTERM),
        Case("resume after the SIGINT, a stray .last.pth.*.tmp of a killed write in the folder",
             ["train", "long.yaml", "--run-dir", "r4", "--resume", "auto", "--set", "schedule.max_iters=4",
              "--resume-changed"], 0, stale="r4/.last.pth.k9x2.tmp"),
        Case("a config error with --debug (traceback shown)", ["train", "tiny.yaml", "--set", "optim.lrr=1",
                                                               "--debug"], 1),
        *more_cases(Case, ENV),
    ]


def message(code: int, out: str, err: str) -> str:
    lines = [line for line in (err if code else out).splitlines() if line.strip()]
    if code == 1 and any(line.startswith("Traceback") for line in lines):
        return f"traceback ({len(lines)} lines), ending: {lines[-1]}"
    if code == 2 and lines and lines[0].endswith("config errors:"):
        return " / ".join([lines[0]] + [line.split("error:", 1)[1].strip() for line in lines[1:]])
    if code and len(lines) != 1:
        return f"{len(lines)} stderr lines; last: {lines[-1] if lines else ''}"
    return lines[-1] if lines else ""


def render(rows: list[tuple[Case, int, str, float]]) -> str:
    ok = sum(code == case.expect for case, code, _, _ in rows)
    lines = [
        "# Reliability: bad input and faults",
        "",
        "Generated by `python benchmarks/reliability_table.py` (do not edit by hand): every case runs",
        "`python -m contraseg ...` as a subprocess in a scratch folder holding a tiny synthetic run",
        "(`run/`), tiny Cityscapes trees (`cs*`) and a file `a_file`. Expected: a user-caused failure",
        "ends in one stderr line `contraseg COMMAND: error: ...` with exit code 2; SIGINT / SIGTERM",
        "during training save `last.pth` and exit 130 / 143; `--debug` shows the traceback.",
        "Permission errors take the same path as the other OSErrors (rows 19-26) but cannot be",
        "shown here when the script runs as root, which ignores file permissions; the read-only",
        "and full-disk rows use real tmpfs mounts (made only when the script runs as root; rows",
        "that need them are left out otherwise). Rows 31-51 are the cases of issue 21; a row whose command succeeds shows the line it is about.",
        "",
        f"{ok} of {len(rows)} cases behave as required.",
        "",
        "| # | bad input or fault | command | exit | expected | message |",
        "|---|---|---|---|---|---|",
    ]
    for index, (case, code, text, _) in enumerate(rows, start=1):
        shown = case.shown or "contraseg " + " ".join(case.argv)
        if case.signal_after:
            shown += f" (then {signal.Signals(case.signum).name})"
        if case.wrapper:
            shown += " (torch.save fails with ENOSPC)"
        if getattr(case, "note", None):
            shown += f" ({case.note})"
        cell = text.replace("|", "\\|")
        lines.append(f"| {index} | {case.what} | `{shown}` | {code} | {case.expect} | {cell} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "reliability.md"))
    parser.add_argument("--keep", help="scratch folder to keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="contraseg-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        prepare(work)
        rows = []
        for case in cases():
            start = time.perf_counter()
            if case.stale:
                (work / case.stale).write_bytes(b"half a checkpoint")
            case.note = case.before(work) if case.before else None
            if case.note and case.note.startswith("SKIP"):
                print(f"skipped {case.what}: {case.note}", flush=True)
                continue
            try:
                code, out, err = contraseg(case.argv, work, case)
            finally:
                if case.after:
                    case.after(work)
            text = message(code, out, err)
            if case.grep:
                text = next((line[line.index(case.grep):].strip() for line in (out + err).splitlines()
                             if case.grep in line),
                            f"NOT SHOWN ({case.grep!r})")
            if case.gone:
                text += f" ({case.gone} {'absent afterwards' if not (work / case.gone).exists() else 'LEFT BEHIND'})"
            if case.stale:
                text += f" ({case.stale} {'removed' if not (work / case.stale).exists() else 'STILL THERE'})"
            rows.append((case, code, text, time.perf_counter() - start))
            mark = "ok " if code == case.expect else "BAD"
            print(f"{mark} exit {code} (want {case.expect}) {case.what}: {rows[-1][2][:160]}", flush=True)
        Path(args.out).write_text(render(rows))
        print(f"wrote {args.out}")
        return 0 if all(code == case.expect for case, code, _, _ in rows) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Nothing lost, nothing silent (issue 12): run folders, resume checks, one-line errors,
interruption, progress, and the friction fixes. Most cases drive ``contraseg.cli.main``
in-process (the same code path as the console script: exit code, stderr, files); the
exit-code contract and Ctrl-C are also checked on a real subprocess."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from contraseg.cli import main
from contraseg.engine.config_io import merge_dicts

from helpers import TINY_SIZE, tiny_config, write_yaml

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def write_config(folder: Path, **sections) -> Path:
    """``folder/tiny.yaml``: the shared tiny config with an 8-d embedding, logged every 2
    iterations, and ``sections`` merged on top."""
    raw = tiny_config(model={"embed_dim": 8}, train={"log_interval": 2})
    return write_yaml(folder / "tiny.yaml", merge_dicts(raw, sections))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One finished tiny run: (config, run dir)."""
    root = tmp_path_factory.mktemp("reliability")
    config = write_config(root)
    assert main(["train", str(config), "--run-dir", str(root / "run"), "--device", "cpu"]) == 0
    return config, root / "run"


def copy_run(run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run[1], target)
    return target


# ------------------------------------------------------------------ run folders
def test_train_refuses_a_finished_run_folder_and_leaves_it_untouched(run, capsys):
    config, run_dir = run
    before = snapshot(run_dir)
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 2
    err = one_line(capsys)
    assert f"contraseg train: error: run folder {run_dir} is not empty" in err and "--resume auto" in err
    assert snapshot(run_dir) == before


def test_train_overwrite_starts_afresh_with_plain_progress_lines(run, tmp_path, capsys, monkeypatch):
    import contraseg.engine.trainer as trainer

    config, _ = run
    run_dir = copy_run(run, tmp_path)
    (run_dir / "notes.txt").write_text("mine")
    log = run_dir / "log.jsonl"
    log.write_text(log.read_text() + json.dumps({"type": "train", "iteration": 99, "loss": 1.0}) + "\n")
    monkeypatch.setattr(trainer, "PRINT_EVERY", 1)  # the at-least-every-50 rule, scaled down
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--overwrite"]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["type"], r["iteration"]) for r in records] == [("train", 2), ("eval", 2)]  # the new run only
    assert records[0]["eta"] == 0.0  # the log keeps its log_interval (2)
    assert (run_dir / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    out = capsys.readouterr().out  # captured: not a terminal
    lines = [line for line in out.splitlines() if line.startswith("[") and "it/s" in line]
    assert [line.split("]")[0] for line in lines] == ["[1/2", "[2/2"]
    assert all(" loss " in line and "| lr " in line and "ETA " in line for line in lines)
    assert "eval synthetic-target/val: 2/2 images (100%)" in out
    assert "done: 2 iterations, best mIoU " in out and "% at iteration 2" in out
    assert main(["train", str(config), "--run-dir", str(run_dir), "--overwrite", "--resume", "auto"]) == 2
    assert "--resume and --overwrite exclude each other" in one_line(capsys)


# ------------------------------------------------------------------ resume
def test_resume_refuses_changed_training_keys_then_accepts_them_when_asked(run, tmp_path, capsys):
    config, _ = run
    run_dir = copy_run(run, tmp_path)
    before = snapshot(run_dir)
    stale = run_dir / ".last.pth.x1y2.tmp"  # what a kill -9 during a checkpoint write leaves
    stale.write_bytes(b"half")
    args = ["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--resume", "auto"]
    assert main(args + ["--set", "optim.lr=0.05", "--set", "train.log_interval=1"]) == 2
    err = one_line(capsys)
    assert "the config changes training keys (optim.lr: 0.01 -> 0.05)" in err and "--resume-changed" in err
    assert "log_interval" not in err  # logging cadence does not change what is trained
    assert snapshot(run_dir) == before and not stale.exists()  # a trainer starting here removed the stale file
    assert main(args + ["--set", "optim.lr=0.05", "--resume-changed"]) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"] == 0.05
    changes = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()
               if '"config_change"' in line]
    assert changes == [{"type": "config_change", "iteration": 2, "changes": {"optim.lr": {"from": 0.01, "to": 0.05}}}]


def test_resume_changed_uses_the_new_learning_rate(run, tmp_path):
    from contraseg.engine.config_io import load_config
    from contraseg.engine.trainer import Trainer

    config, _ = run
    cfg = load_config(config, ["optim.lr=0.05", "schedule.max_iters=4"])
    trainer = Trainer(cfg, copy_run(run, tmp_path), resume="auto", progress=False, resume_changed=True)
    rates = [g["base_lr"] for g in trainer.optimizer.param_groups]
    assert rates[0] == 0.05 and max(rates) == pytest.approx(0.5)  # backbone, head x10
    assert set(trainer.config_changes) == {"optim.lr", "schedule.max_iters"}


# ------------------------------------------------------------------ one error path
@pytest.mark.parametrize("overrides, message", [
    (["data.train.options.lenght=5"], "config key data.train.options.lenght: dataset synthetic-source has no option "
                                      "'lenght'; options: "),
    (["data.train.name=cityscapes", "data.train.options={}"],
     "config key data.train.root: dataset cityscapes needs a root folder"),
])
def test_dataset_config_mistakes_are_one_line(tmp_path, capsys, overrides, message):
    config = write_config(tmp_path)
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--device", "cpu", *sets]) == 2
    assert message in one_line(capsys)


def test_truncated_pretrained_file_is_one_line(tmp_path, capsys):
    weights = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, weights)
    weights.write_bytes(weights.read_bytes()[:100])
    config = write_config(tmp_path)
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--device", "cpu",
                 "--set", f"model.pretrained={weights}"]) == 2
    err = one_line(capsys)
    assert str(weights) in err and ("model.pretrained" in err or "not a readable" in err)


def test_debug_shows_the_traceback(tmp_path, capsys):
    config = write_config(tmp_path)
    with pytest.raises(ValueError, match="unknown config key optim.lrr"):
        main(["train", str(config), "--set", "optim.lrr=1", "--debug"])
    with pytest.raises(ValueError, match="unknown config key optim.lrr"):
        main(["--debug", "train", str(config), "--set", "optim.lrr=1"])


def test_dataloader_worker_errors_are_unwrapped():
    from torch._utils import ExceptionWrapper

    from contraseg.errors import error_message

    try:
        raise ValueError("unreadable label: /data/gtFine/a_labelIds.png is truncated")
    except ValueError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as caught:
        wrapper.reraise()
    assert "Original Traceback" in str(caught.value)
    assert error_message(caught.value) == "unreadable label: /data/gtFine/a_labelIds.png is truncated"
    assert error_message(OSError(errno.ENOSPC, "No space left on device", "/r/last.pth")) == \
        "/r/last.pth: No space left on device"
    assert len(error_message(ValueError("x" * 5000))) == 400


def test_unwritable_outputs_are_one_line(run, tmp_path, capsys):
    config, run_dir = run
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["train", str(config), "--run-dir", str(blocker / "run"), "--device", "cpu"]) == 2
    assert one_line(capsys) == f"contraseg train: error: cannot use {blocker / 'run'} as a folder: {blocker} is a file"
    assert main(["eval", str(run_dir / "last.pth"), "--out", str(blocker / "m.json"), "--device", "cpu",
                 "--num-workers", "0"]) == 2
    assert f"contraseg eval: error: cannot create the folder {blocker}: a file has that name" in one_line(capsys)
    assert main(["prototypes", "make", "--classes", "3", "--dim", "4", "--out", str(blocker / "p.pt")]) == 2
    assert f"contraseg prototypes: error: cannot create the folder {blocker}: a file has that name" in one_line(capsys)


def test_full_disk_while_checkpointing_keeps_the_old_checkpoint(run, tmp_path, capsys, monkeypatch):
    import contraseg.engine.checkpoint as checkpoint

    config, _ = run
    run_dir = copy_run(run, tmp_path)
    old = (run_dir / "last.pth").read_bytes()
    real_save = torch.save

    def full_disk(obj, handle):  # writes part of the file, then the disk is full (write(2) names no file)
        real_save({"partial": torch.zeros(10)}, handle)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--resume", "auto",
                 "--set", "schedule.max_iters=3", "--resume-changed"]) == 2
    assert one_line(capsys) == f"contraseg train: error: {run_dir / 'last.pth'}: No space left on device"
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert (run_dir / "last.pth").read_bytes() == old  # the atomic write kept the old file whole
    assert not list(run_dir.glob(".*.tmp"))


def test_sigterm_finishes_the_step_saves_and_resumes(tmp_path, capsys, monkeypatch):
    from contraseg.engine.trainer import Trainer

    config = write_config(tmp_path, train={"log_interval": 1, "eval_interval": 2, "checkpoint_interval": 2})
    real_step = Trainer.train_step

    def step_then_signal(self, batch):
        terms = real_step(self, batch)
        if self.iteration == 0:  # arrives during the first step
            os.kill(os.getpid(), signal.SIGTERM)
        return terms

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]) == 143
    err = one_line(capsys)
    assert "interrupted by SIGTERM at iteration 1; saved " in err and f"--run-dir {run_dir} --resume auto" in err
    assert torch.load(run_dir / "last.pth", weights_only=True)["iteration"] == 1
    assert not (run_dir / "best.pth").exists()  # stopped before the evaluation at iteration 2
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert main(["train", str(config), "--run-dir", str(run_dir), "--device", "cpu", "--resume", "auto"]) == 0
    assert "done: 2 iterations" in capsys.readouterr().out


@pytest.mark.slow
def test_ctrl_c_on_a_real_process_saves_and_exits_130(tmp_path):
    """The console contract on a real process: Ctrl-C finishes the step, saves, one stderr line, exit 130."""
    long = write_config(tmp_path, schedule={"max_iters": 10000},
                        train={"log_interval": 1, "eval_interval": 10000, "checkpoint_interval": 10000})
    target = tmp_path / "sigint"
    proc = subprocess.Popen([sys.executable, "-m", "contraseg", "train", str(long), "--run-dir", str(target),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        opening = []  # the trainer's opening lines (total batch, model selection), then progress
        for _ in range(10):
            line = proc.stdout.readline()
            if not line or line.startswith("[1/"):
                break
            opening.append(line)
        assert any(o.startswith("total batch 2 = 2 x 1 process") for o in opening), opening
        assert line.startswith("[1/10000] loss "), line  # the first plain progress line: training runs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted by SIGINT" in err and "--resume auto" in err, err
    state = torch.load(target / "last.pth", weights_only=True)
    assert state["iteration"] >= 1 and not list(target.glob(".*.tmp"))


def test_keyboard_interrupt_elsewhere_is_one_line_exit_130(capsys):
    from contraseg.cli import report_errors

    def body():
        raise KeyboardInterrupt

    assert report_errors("eval", body) == 130
    assert one_line(capsys) == "contraseg eval: error: interrupted"


# ------------------------------------------------------------------ empty / unlabelled data
def _cityscapes_without_labels(root: Path) -> Path:
    from test_data_formats import write_cityscapes

    write_cityscapes(root, split="val", cities=(("aachen", 2),))
    (root / "gtFine").rename(root / "gtfine")  # misnamed: every image reads as unlabeled
    return root


def test_unlabelled_or_empty_data_is_an_error_in_check_train_and_eval(run, tmp_path, capsys):
    config, run_dir = run
    root = _cityscapes_without_labels(tmp_path / "cs")
    assert main(["datasets", "check", str(root), "--dataset", "cityscapes", "--split", "val"]) == 2
    assert "no label folder" in one_line(capsys)
    (tmp_path / "empty" / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "empty" / "gtFine" / "val").mkdir(parents=True)
    assert main(["datasets", "check", str(tmp_path / "empty"), "--dataset", "cityscapes", "--split", "val"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["train", str(config), "--run-dir", str(tmp_path / "r"), "--device", "cpu",
                 "--set", "data.train.name=cityscapes", "--set", f"data.train.root={root}",
                 "--set", "data.train.split=val", "--set", "data.train.options={}"]) == 2
    assert "has no label folder, so no labelled pixel to train on" in one_line(capsys)
    code = main(["eval", str(run_dir / "last.pth"), "--dataset", "cityscapes", "--root", str(root),
                 "--device", "cpu", "--num-workers", "0", "--out", str(tmp_path / "m.json")])
    assert code == 2 and "has no labelled pixel" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ output folders
def test_eval_json_is_named_by_what_it_evaluated(run, capsys):
    _, run_dir = run
    checkpoint = run_dir / "last.pth"
    assert main(["eval", str(checkpoint), "--device", "cpu", "--num-workers", "0"]) == 0
    (first,) = run_dir.glob("last.pth.eval.synthetic-target-val.*.json")
    assert len(first.name) == len("last.pth.eval.synthetic-target-val.12345678.json")
    stored = json.loads(first.read_text())
    assert main(["eval", str(checkpoint), "--device", "cpu", "--num-workers", "0", "--dataset", "synthetic-source",
                 "--option", "length=2", "--option", f"size=[{TINY_SIZE[0]},{TINY_SIZE[1]}]"]) == 0
    printed = capsys.readouterr().out
    assert "eval synthetic-source/val: 2/2 images (100%)" in printed and "mIoU " in printed and "%" in printed
    (second,) = run_dir.glob("last.pth.eval.synthetic-source-val.*.json")
    assert second.is_file() and json.loads(first.read_text()) == stored  # the first result is kept
    metrics = stored["results"]["synthetic-target/val"]
    assert stored["unit"] == "%" and 0 <= metrics["mIoU"] <= 100
    iou = [v for v in metrics["IoU"] if v is not None]
    assert metrics["mIoU"] == pytest.approx(sum(iou) / len(iou), abs=1e-3)  # percent, as mmsegmentation
    assert main(["eval", str(checkpoint), "--option", "length=2"]) == 2
    assert "--option needs --dataset" in one_line(capsys)


def test_pseudo_label_and_weak_label_folders_are_not_mixed(run, tmp_path, capsys):
    _, run_dir = run
    out = tmp_path / "pl"
    out.mkdir()
    (out / "stale_000.png").write_bytes(b"old")
    (out / "keep.txt").write_text("mine")
    base = ["pseudo-label", str(run_dir / "last.pth"), "--dataset", "synthetic-target", "--option", "length=2",
            "--option", f"size=[{TINY_SIZE[0]},{TINY_SIZE[1]}]", "--out", str(out), "--device", "cpu", "--num-workers", "0"]
    assert main(base) == 2
    assert f"pseudo-label folder {out} is not empty" in one_line(capsys)
    assert (out / "stale_000.png").read_bytes() == b"old"
    assert main(base + ["--overwrite"]) == 0
    assert "pseudo-label labels: 2/2 images (100%)" in capsys.readouterr().out
    assert not (out / "stale_000.png").exists() and (out / "keep.txt").is_file()
    assert len(list(out.glob("*.png"))) == 2 and (out / "summary.json").is_file()
    weak = ["weak-labels", "--kind", "point", "--dataset", "synthetic-target", "--option", "length=2",
            "--out", str(out)]
    assert main(weak) == 2
    assert f"weak-label folder {out} is not empty" in one_line(capsys)


def test_predict_formats_and_overwrite(run, tmp_path, capsys):
    from contraseg.engine.restore import restore_model

    _, run_dir = run
    rng = np.random.default_rng(0)
    image = tmp_path / "aachen_000000_000019_leftImg8bit.png"
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "pred"
    common = ["predict", str(run_dir / "last.pth"), str(image), "--out", str(out), "--device", "cpu"]
    assert main(common + ["--format", "trainid"]) == 0
    assert "[1/1]" in capsys.readouterr().out
    trainid = np.asarray(Image.open(out / "aachen_000000_000019_leftImg8bit.png"))
    assert trainid.shape == (24, 40) and trainid.max() < 19
    assert main(common + ["--format", "trainid"]) == 0  # the same settings: the rerun continues
    assert "1 image(s) already predicted were skipped" in capsys.readouterr().out
    assert main(common + ["--format", "labelid"]) == 2
    assert f"prediction folder {out} holds predictions of other settings (format 'trainid' -> 'labelid')" in one_line(capsys)
    assert main(common + ["--format", "labelid", "--overwrite"]) == 0
    labelid = np.asarray(Image.open(out / "aachen_000000_000019_leftImg8bit.png"))
    assert np.array_equal(labelid, trainid)  # synthetic-source has no label table: its ids are train ids
    assert sorted(p.name for p in out.iterdir()) == ["aachen_000000_000019_leftImg8bit.png", "predict.json"]
    assert len(restore_model(run_dir / "last.pth").classes) == 19


def test_cityscapes_label_ids_for_the_official_evaluation():
    from contraseg.commands.predict import label_id_table
    from contraseg.data.palettes import CITYSCAPES_CLASSES

    lut, note = label_id_table("cityscapes", list(CITYSCAPES_CLASSES))
    # cityscapesscripts' labels.py: trainId -> id
    official = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert lut[:19].tolist() == official and "label ids" in note
    assert label_id_table("gta5", list(CITYSCAPES_CLASSES))[0][:19].tolist() == official
    from contraseg.data.ade20k import ADE20K_CLASSES

    assert label_id_table("ade20k", list(ADE20K_CLASSES))[0][:3].tolist() == [1, 2, 3]


# ------------------------------------------------------------------ progress
def test_progress_and_heartbeat_lines(capsys):
    import io

    from contraseg.engine.run_log import Heartbeat, Progress

    stream = io.StringIO()
    bar = Progress("eval x/val", 20, stream=stream)
    for _ in range(20):
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("eval x/val: 20/20 images (100%)")
    stream = io.StringIO()
    with Heartbeat("prototypes make", interval=0.05, stream=stream):
        time.sleep(0.3)
    assert "prototypes make: still running, 0:00:00 elapsed" in stream.getvalue()


def test_logs_store_percent_and_curves_read_both_units(tmp_path):
    from contraseg.engine.run_log import RunLogger
    from contraseg.viz.curves import read_run_curves

    logger = RunLogger(tmp_path, tensorboard=False, progress=False)
    logger.log_eval(2, "x/val", {"classes": ["a", "b"], "IoU": [0.5, 0.25], "mIoU": 0.375, "mAcc": 0.5, "aAcc": 0.6})
    with open(tmp_path / "log.jsonl", "a") as handle:  # an older log line, as a fraction
        handle.write(json.dumps({"type": "eval", "iteration": 4, "dataset": "x/val", "mIoU": 0.5}) + "\n")
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert record["unit"] == "%" and record["mIoU"] == 37.5 and record["IoU"] == {"a": 50.0, "b": 25.0}
    assert read_run_curves(tmp_path).evals["x/val"] == ([2, 4], [0.375, 0.5])


# ------------------------------------------------------------------ friction
def test_version_threads_and_adapt_done_summary(run, tmp_path, capsys):
    from contraseg import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"contraseg {__version__}"
    config, run_dir = run
    assert main(["train", str(config), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in one_line(capsys)
    adapt = write_config(tmp_path, schedule={"max_iters": 1},
                         train={"log_interval": 1, "eval_interval": 1, "checkpoint_interval": 1,
                                "tensorboard": False, "best_on": "synthetic-target/val"},
                         adapt={"method": "source_only", "init_checkpoint": str(run_dir / "last.pth")})
    assert main(["adapt", str(adapt), "--run-dir", str(tmp_path / "a"), "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "done: 1 iterations, best mIoU " in out and f"checkpoints in {tmp_path / 'a'}" in out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert summary["method"] == "source_only" and 0 <= summary["best_mIoU"] <= 100

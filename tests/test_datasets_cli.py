"""``contraseg datasets list`` and ``contraseg datasets check`` on fixture trees."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from contraseg.cli import main
from contraseg.data import registry
from contraseg.data.palettes import CITYSCAPES_CLASSES
from test_data_formats import (
    CS_REFERENCE,
    _slow_map,
    write_ade20k,
    write_cityscapes,
    write_gta5,
    write_synthia,
)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _histogram_rows(out):
    """{class name: pixel count} parsed from the printed table."""
    rows = {}
    for line in out.splitlines():
        match = re.match(r"^\s*(\d+)?\s+(.+?)\s+(\d+)\s+(\d+\.\d\d)$", line)
        if match:
            rows[match.group(2)] = int(match.group(3))
    return rows


def test_list_prints_registered_names(capsys):
    code, out, _ = _run(capsys, "datasets", "list")
    assert code == 0
    names = out.split()
    assert {"cityscapes", "gta5", "synthia", "ade20k", "synthetic-source", "synthetic-target"} <= set(names)
    assert names == sorted(names)


def test_check_clean_cityscapes_prints_exact_histogram(tmp_path, capsys):
    written = write_cityscapes(tmp_path)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "cityscapes", "--split", "train")
    assert code == 0, err
    assert err == ""
    assert "3 images, 3 labels, 3 samples read" in out
    assert "ok: no problems found" in out
    expected = np.zeros(256, np.int64)
    for _, raw in written.values():
        mapped = _slow_map(raw, CS_REFERENCE)
        for value in mapped.ravel():
            expected[value] += 1
    rows = _histogram_rows(out)
    for train_id, name in enumerate(CITYSCAPES_CLASSES):
        assert rows[name] == expected[train_id]
    assert rows["ignored"] == expected[255]
    total = expected.sum()
    road_line = next(line for line in out.splitlines() if re.search(r"\broad\b", line))
    assert road_line.rstrip().endswith(f"{100 * expected[0] / total:.2f}")


@pytest.mark.parametrize("writer, name, extra", [
    (write_gta5, "gta5", []),
    (write_synthia, "synthia", ["--option", "num_classes=13"]),
    (write_ade20k, "ade20k", ["--split", "training"]),
])
def test_check_clean_other_formats(tmp_path, capsys, writer, name, extra):
    writer(tmp_path)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", name, *extra)
    assert code == 0, err
    assert "ok: no problems found" in out


def test_check_coarse_mode_option(tmp_path, capsys):
    write_cityscapes(tmp_path, split="train_extra", mode="coarse", cities=(("erlangen", 2),))
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "cityscapes",
                          "--split", "train_extra", "--option", "mode=coarse")
    assert code == 0, err
    assert "2 images, 2 labels" in out


def test_check_missing_root(tmp_path, capsys):
    missing = tmp_path / "absent"
    code, _, err = _run(capsys, "datasets", "check", str(missing), "--dataset", "gta5")
    assert code == 2
    assert str(missing) in _one_line_error(err)


def test_check_image_without_label(tmp_path, capsys):
    write_cityscapes(tmp_path)
    label = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000001_000020_gtFine_labelIds.png"
    label.unlink()
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "cityscapes")
    assert code == 2
    line = _one_line_error(err)
    assert "image without label" in line and "aachen_000001_000020_leftImg8bit.png" in line
    assert str(label) in line
    assert "3 images, 2 labels" in out


def test_check_label_without_image(tmp_path, capsys):
    write_gta5(tmp_path, count=2)
    (tmp_path / "images" / "00002.png").unlink()
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5")
    assert code == 2
    line = _one_line_error(err)
    assert "label without image" in line and str(tmp_path / "labels" / "00002.png") in line


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_check_truncated_image(tmp_path, capsys):
    write_gta5(tmp_path, count=2)
    _truncate(tmp_path / "images" / "00002.png")
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5")
    assert code == 2
    line = _one_line_error(err)
    assert "unreadable image" in line and str(tmp_path / "images" / "00002.png") in line


def test_check_truncated_label_png(tmp_path, capsys):
    write_cityscapes(tmp_path, cities=(("ulm", 2),))
    label = tmp_path / "gtFine" / "train" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png"
    _truncate(label)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "cityscapes")
    assert code == 2
    line = _one_line_error(err)
    assert "unreadable label" in line and str(label) in line


def test_check_truncated_synthia_label(tmp_path, capsys):
    write_synthia(tmp_path, count=2)
    label = tmp_path / "GT" / "LABELS" / "0000001.png"
    _truncate(label)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "synthia")
    assert code == 2
    assert str(label) in _one_line_error(err)


def test_check_label_value_outside_the_table(tmp_path, capsys):
    written = write_cityscapes(tmp_path, cities=(("ulm", 2),))
    name = sorted(written)[1]
    label = tmp_path / "gtFine" / "train" / "ulm" / f"{name}_gtFine_labelIds.png"
    raw = written[name][1].copy()
    raw[5, 5] = 40
    raw[6, 6] = 200
    Image.fromarray(raw).save(label)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "cityscapes")
    assert code == 2
    line = _one_line_error(err)
    assert str(label) in line and "40, 200" in line and "outside the cityscapes id table" in line
    assert "road" in out  # the histogram is still printed


def test_check_ade20k_value_above_150(tmp_path, capsys):
    write_ade20k(tmp_path, count=1)
    label = tmp_path / "annotations" / "training" / "ADE_train_00000001.png"
    raw = np.asarray(Image.open(label)).copy()
    raw[0, 0] = 151
    Image.fromarray(raw).save(label)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "ade20k")
    assert code == 2
    assert "151" in _one_line_error(err) and str(label) in err


def test_check_synthia_void_is_not_a_problem_but_unknown_id_is(tmp_path, capsys):
    import cv2

    write_synthia(tmp_path, count=1)
    label = tmp_path / "GT" / "LABELS" / "0000000.png"
    bgr = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    bgr[..., 2] = 0  # all void: no value problem, but no labelled pixel at all
    bgr[..., 1] = 999  # instance ids are not class ids: fine
    cv2.imwrite(str(label), bgr)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "synthia")
    assert code == 2 and "no labelled pixel" in _one_line_error(err) and "23" not in err
    bgr[1:, :, 2] = 3  # void in the first row only: fine
    cv2.imwrite(str(label), bgr)
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "synthia")
    assert code == 0, err
    bgr[0, 0, 2] = 23
    cv2.imwrite(str(label), bgr)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "synthia")
    assert code == 2 and "23" in _one_line_error(err)


def test_check_size_mismatch(tmp_path, capsys):
    write_gta5(tmp_path, count=1)
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(tmp_path / "images" / "00001.png")
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5")
    assert code == 2
    line = _one_line_error(err)
    assert "size mismatch" in line and "20x32" in line and "16x32" in line


def test_check_reports_every_problem_and_counts_them(tmp_path, capsys):
    write_gta5(tmp_path, count=3)
    (tmp_path / "labels" / "00001.png").unlink()
    _truncate(tmp_path / "images" / "00002.png")
    code, out, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5")
    assert code == 2
    assert out.count("problem: ") == 2
    assert "(and 1 more)" in _one_line_error(err)


def test_check_user_errors(tmp_path, capsys, monkeypatch):
    write_gta5(tmp_path, count=1)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "kitti")
    assert code == 2 and "unknown dataset 'kitti'" in _one_line_error(err)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5", "--option", "mode=coarse")
    assert code == 2 and "has no option 'mode'" in _one_line_error(err)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5", "--option", "novalue")
    assert code == 2 and "KEY=VALUE" in _one_line_error(err)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5", "--split", "val")
    assert code == 2 and "val.txt" in _one_line_error(err)

    class InMemory:
        def __init__(self, **kwargs):
            pass

    monkeypatch.setitem(registry._REGISTERED, "in-memory", InMemory)
    code, _, err = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "in-memory")
    assert code == 2 and "not stored as files" in _one_line_error(err)


def test_check_limit_reads_fewer_samples(tmp_path, capsys):
    write_gta5(tmp_path, count=3)
    code, out, _ = _run(capsys, "datasets", "check", str(tmp_path), "--dataset", "gta5", "--limit", "1")
    assert code == 0 and "3 images, 3 labels, 1 samples read" in out

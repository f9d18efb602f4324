"""``python -m contraseg.bench gpu`` without a GPU: it refuses loudly, its report writer,
its orchestration (checks faked) and the parts of its checks that also run on a CPU."""

from __future__ import annotations

import torch

from contraseg.bench import gpu, gpu_loss_checks, gpu_report
from contraseg.bench.gpu import CheckResult


def test_without_cuda_it_says_so_and_exits_non_zero(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.md"
    assert gpu.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "GPU CHECK FAILED: no CUDA device" in err and "no report was written" in err
    assert not out.exists()


def test_bench_entry_point_knows_gpu(monkeypatch, capsys) -> None:
    from contraseg.bench.__main__ import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


FAKE = [
    CheckResult("losses-fp32", True, "cuda float32 vs CPU float64, 2 losses",
                {"proac": {"loss_fp64": 8.08, "grad_rel_err": "5.5e-07"},
                 "pixel-contrast": {"loss_fp64": 11.7, "grad_rel_err": "4.0e-07"}}, 1.25),
    CheckResult("losses-fp16", False, "autocast fp16 vs float32; mismatch: proac (loss 3.0e-02, grad 1.0e-01)",
                {"proac": {"loss_abs_err": "3.0e-02", "grad_rel_err": "1.0e-01"}}, 0.5),
    CheckResult("syncbn", None, "torch's SyncBatchNorm function is not importable"),
    CheckResult("train-amp-syncbn", True, "50 iterations", {"loss_first10": 3.1, "loss_last10": 2.2}, 30.0),
    CheckResult("bench-losses", True, "python -m contraseg.bench losses --device cuda (exit 0)", {"exit_code": 0}, 90.0,
                "| loss | h x w |\n|---|---|\n| proac | 65 x 129 |"),
]
ENV = {"device": "NVIDIA H200 (compute capability 9.0, 140 GiB)", "torch": "2.11.0+cu128"}


def test_report_lists_every_check_with_status_and_numbers(tmp_path) -> None:
    path = tmp_path / "docs" / "gpu.md"
    gpu.write_report(FAKE, ENV, path, "PYTHONPATH=src python -m contraseg.bench gpu", 321.4)
    text = path.read_text()
    assert "**FAILED: losses-fp16.**" in text and "(321 s)" in text
    assert "| device | NVIDIA H200 (compute capability 9.0, 140 GiB) |" in text
    assert "| torch | 2.11.0+cu128 |" in text
    assert "| losses-fp32 | pass | 1.2 | cuda float32 vs CPU float64, 2 losses |" in text
    assert "| losses-fp16 | FAIL | 0.5 |" in text and "| syncbn | skipped |" in text
    assert "| case | loss_fp64 | grad_rel_err |" in text and "| pixel-contrast | 11.7 | 4.0e-07 |" in text
    assert "- loss_last10: 2.2" in text
    assert "| proac | 65 x 129 |" in text  # a benchmark's table is copied
    passed = gpu_report.format_report([FAKE[0], FAKE[3]], ENV, "cmd", 1.0)
    assert "**ALL CHECKS PASSED.**" in passed


def _fake_checks(monkeypatch, fp16_passes: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(gpu, "environment", lambda: dict(ENV))
    monkeypatch.setattr(gpu, "init_single_process_group", lambda backend="nccl": None)
    fp16 = CheckResult("losses-fp16", fp16_passes, "autocast fp16 vs float32")
    monkeypatch.setattr(gpu, "check_losses", lambda device, inputs: [FAKE[0], fp16])
    monkeypatch.setattr(gpu, "check_grad_scaler", lambda device, inputs: CheckResult("grad-scaler", True, "ok"))
    monkeypatch.setattr(gpu, "check_syncbn", lambda device: CheckResult("syncbn", True, "ok"))

    def train(device, iterations):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    monkeypatch.setattr(gpu, "check_training", train)


def test_a_mismatch_or_an_exception_fails_the_run_loudly(monkeypatch, tmp_path, capsys) -> None:
    _fake_checks(monkeypatch, fp16_passes=False)
    out = tmp_path / "gpu.md"
    assert gpu.main(["--out", str(out), "--skip-bench"]) == 1
    err = capsys.readouterr().err
    assert "GPU CHECK FAILED: losses-fp16: autocast fp16 vs float32" in err
    assert "GPU CHECK FAILED: train-amp-syncbn: raised RuntimeError: CUDA error: an illegal memory access" in err
    text = out.read_text()
    assert "| train-amp-syncbn | FAIL |" in text and "| grad-scaler | pass |" in text
    assert "inference" not in text  # nothing to infer with after a failed training run


def test_loss_checks_run_on_cpu_and_catch_a_mismatch() -> None:
    """The same loss checks on the CPU (bf16 autocast): the real losses pass; a loss that
    is off by 1e-3 in float32 is reported by name."""
    inputs = gpu.make_loss_inputs(batch=2, dim=16, height=9, width=13, num_classes=5)
    results = gpu.check_losses(torch.device("cpu"), inputs, half_dtypes=(torch.bfloat16,))
    assert [r.name for r in results] == ["losses-fp32", "losses-bf16"]
    assert all(r.passed for r in results), [r.summary for r in results]
    assert set(results[0].numbers) == {"proac", "proac-pixel-anchor", "pixel-contrast", "pixel-contrast-memory",
                                       "protoseg-ppc-ppd", "wdass-image-level", "wdass-prototype-contrast"}
    cases = gpu_loss_checks.build_loss_cases(inputs)

    def off_in_float32(device, dtype):
        loss = cases["proac"](device, dtype)
        return (lambda f: loss(f) + 1e-3) if dtype == torch.float32 else loss

    broken = gpu.check_losses(torch.device("cpu"), inputs, half_dtypes=(), cases={"proac-off": off_in_float32})
    assert broken[0].passed is False and "mismatch: proac-off" in broken[0].summary


def test_grad_scaler_check_on_cpu() -> None:
    inputs = gpu.make_loss_inputs(batch=1, dim=8, height=5, width=7, num_classes=3)
    result = gpu.check_grad_scaler(torch.device("cpu"), inputs)
    assert result.passed, result.numbers
    assert result.numbers["inf_step_skipped"] is True and result.numbers["scale_after_inf"] < 2.0**14


def test_memory_sampling_check_on_cpu_and_it_catches_a_mismatch(monkeypatch) -> None:
    """The check runs on the CPU as on a device (it passes), and a loss that moves on the
    "device" side is reported by strategy and precision."""
    result = gpu_loss_checks.check_memory_sampling(torch.device("cpu"), num_anchors=40, block_size=32)
    assert result.passed, result.summary
    assert set(result.numbers) == {"random", "hardest", "semi_hard"}
    assert "fp32_loss_rel_err" not in result.numbers["semi_hard"] and "fp64_grad_rel_err" in result.numbers["semi_hard"]
    from contraseg.losses import memory_sampling

    real = memory_sampling.sampled_memory_contrast

    def off_in_float32(anchors, *args, **kwargs):
        loss = real(anchors, *args, **kwargs)
        return loss * (1 + 1e-3) if anchors.dtype == torch.float32 else loss

    monkeypatch.setattr(memory_sampling, "sampled_memory_contrast", off_in_float32)
    broken = gpu_loss_checks.check_memory_sampling(torch.device("cpu"), num_anchors=40, block_size=32)
    assert broken.passed is False and "random fp32" in broken.summary and "hardest fp32" in broken.summary

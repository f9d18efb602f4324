"""No loss may build an N x N matrix over all pixels.

Peak memory of one forward+backward (replayed from the profiler's allocation events)
must grow linearly with the number of pixels: four times the pixels, about four times
the memory (an N x N matrix would make it sixteen). At 90,000 pixels such a matrix
alone would take 32 GB.
"""

import pytest
import torch

from contraseg.bench.losses import build_case, make_inputs
from contraseg.bench.timing import cpu_peak_bytes

B, D, K = 1, 8, 19
SMALL, LARGE = (150, 150), (300, 300)


def peak(case, size):
    inputs = make_inputs(B, D, *size, K, torch.device("cpu"))
    return cpu_peak_bytes(build_case(case, D, K, torch.device("cpu"), inputs))


@pytest.mark.parametrize(
    "case", ["proac", "proac-pixel-anchor", "pixel-contrast", "protoseg-ppc-ppd", "wdass-prototype-contrast"]
)
def test_peak_memory_is_linear_in_pixels(case):
    small, large = peak(case, SMALL), peak(case, LARGE)
    n = B * LARGE[0] * LARGE[1]
    assert large / small < 6, f"{case}: 4x the pixels took {large / small:.1f}x the memory"
    assert large < n * n * 4 / 50, f"{case}: peak {large / 2**20:.0f} MiB at {n} pixels"

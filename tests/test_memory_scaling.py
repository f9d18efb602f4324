"""No loss may build an N x N matrix over all pixels.

With N = 90,000 pixels such a matrix alone would take 32 GB in float32; the peak memory
of one forward+backward (measured from the profiler's allocation events) must instead
stay within a small multiple of the N x D embeddings.
"""

import pytest
import torch
import torch.nn.functional as F

from contraseg.bench.losses import build_case, make_inputs
from contraseg.bench.timing import cpu_peak_bytes

B, D, K, H, W = 1, 8, 19, 300, 300
N = B * H * W


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(B, D, H, W, K, torch.device("cpu"))


@pytest.mark.parametrize(
    "case", ["proac", "proac-pixel-anchor", "pixel-contrast", "protoseg-ppc-ppd", "wdass-prototype-contrast"]
)
def test_peak_memory_is_linear_in_pixels(case, inputs):
    run = build_case(case, D, K, torch.device("cpu"), inputs)
    peak = cpu_peak_bytes(run)
    n_by_n = N * N * 4
    per_pixel_budget = 4 * (D + 10 * K) * 8  # a few N x D and N x K*M float tensors
    assert peak < N * per_pixel_budget, f"{case}: peak {peak / 2**20:.0f} MiB"
    assert peak < n_by_n / 100

"""``python -m contraseg.bench NAME [args]``: run one benchmark (NAME: losses, train-step), or
``gpu``, the CUDA check that writes docs/gpu.md."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {"losses": "contraseg.bench.losses", "train-step": "contraseg.bench.train_step",
              "gpu": "contraseg.bench.gpu"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m contraseg.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())

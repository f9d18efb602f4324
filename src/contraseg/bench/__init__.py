"""Benchmarks: ``python -m contraseg.bench {losses,train-step}``.

Timings are reported as ratios measured in one run (loss time / time of one matmul of
the same size), never asserted in tests.
"""

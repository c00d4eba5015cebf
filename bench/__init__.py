"""Benchmark suite for compress/load speed and sizes (issue 3); run with ``python -m bench``."""

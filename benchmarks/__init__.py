"""edgeprune's benchmarks (`make bench-*`), outside the package: they measure it, they are not part of it.

Run from the repository root as `python -m benchmarks.<name>`; results go to bench/ as JSON + markdown.
"""

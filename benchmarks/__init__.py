"""Side-by-side benchmarks against peers, run with `quanyu bench <name>`; figures go to BENCHMARKS.md."""

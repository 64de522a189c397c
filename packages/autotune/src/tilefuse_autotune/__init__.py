"""tilefuse-autotune: pick the fastest candidate kernel for an op, and remember it."""

"""Codegen: the wrapper module that launches kernels in order, and the kernel disk cache."""

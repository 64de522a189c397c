"""Example tilefuse plugins from the imaginary vendor "acme": a C++/OpenMP backend for CPU
tensors (``descriptor``) and a scheduling policy (``policy``). See README.md."""

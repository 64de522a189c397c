"""The GPU benchmark suite: tilefuse against eager PyTorch and Inductor, as % of a measured floor.

Entry points: ``python bench/run.py`` (measure) and ``python bench/report.py FILE.json`` (print a
saved run). See bench/README.md.
"""

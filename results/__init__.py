"""Data shipped with the package: the paper's reported numbers (paper/*.csv). Runs are written to results/runs/."""

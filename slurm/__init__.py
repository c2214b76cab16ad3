"""Cluster launching (submitit executors, cluster profiles, sweep grids): see slurm/README.md."""

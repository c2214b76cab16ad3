"""The command-line side of issue 6: ``run/eval --executor``, ``sweep`` and their flags (imported lazily by
``benchmark.cli``; heavy imports stay inside the functions)."""

from __future__ import annotations

import argparse


def add_executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", default=None, choices=["local", "slurm", "debug"],
                   help="submit through submitit: slurm (sbatch), local (subprocess, real pickling and signals), "
                        "debug (in-process); default: run here without submitit")
    p.add_argument("--cluster", default=None, metavar="PROFILE",
                   help="cluster profile: slurm/profiles/PROFILE.toml or a .toml path (partition, account, qos, "
                        "constraint, nodes, gpus_per_node, cpus_per_task, mem_gb, timeout_min, signal_delay_s, ...)")
    p.add_argument("--cluster-set", dest="cluster_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile value, e.g. --cluster-set partition=gpu --cluster-set nodes=4 "
                        "(additional.KEY=VALUE for any other #SBATCH key; setup lines separated by ';')")


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    from benchmark.slurm.sweeps import SWEEPS

    p.add_argument("name", help=f"sweep: {', '.join(SWEEPS)}")
    p.add_argument("--dry-run", action="store_true", help="print grid points, run ids and sbatch parameters only")
    p.add_argument("--parallelism", type=int, default=None, help="array tasks running at once (slurm_array_parallelism)")
    p.add_argument("--preset", default=None, help="override the grid's model size (e.g. tiny; rows then show †)")
    p.add_argument("--data", default=None, help="override the grid's data (synthetic | cc12m)")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps of every point")
    p.add_argument("--tasks", default=None, help="override the tasks the table reads ('none' for training only)")
    p.add_argument("--out", default="results/runs", help="runs directory (default results/runs)")
    p.add_argument("--seed", type=int, default=None, help="training seed of every point (default 0)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field of every point (repeatable)")
    p.add_argument("--force", action="store_true", help="redo completed points too")
    add_executor_args(p)


def run_command(args: argparse.Namespace, cfg) -> int:
    from benchmark.slurm.launch import load_profile, submit_runs, wait

    prof = load_profile(args.cluster, args.cluster_sets)
    jobs = submit_runs([cfg], args.executor, prof, force=args.force)
    job = jobs[0]
    print(f"submitted {cfg.objective.name} run as {args.executor} job {job.job_id} (log: {job.paths.stdout})")
    if args.executor != "slurm":
        wait(jobs)
    else:
        print("follow it with: python -m benchmark status --runs " + str(cfg.out))
    return 0


def eval_command(args: argparse.Namespace, tasks: list[str]) -> int:
    from benchmark.slurm.launch import load_profile, submit_eval, wait

    job = submit_eval(args.run, tasks, not args.no_ema, args.executor, load_profile(args.cluster, args.cluster_sets))
    print(f"submitted eval of {args.run} as {args.executor} job {job.job_id} (log: {job.paths.stdout})")
    if args.executor != "slurm":
        wait([job])
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from benchmark.slurm.launch import jobs_folder, load_profile, sbatch_preview, submit_runs, wait
    from benchmark.slurm.sweeps import plan

    from benchmark.config import parse_set

    cli = {"preset": args.preset, "data": args.data, "steps": args.steps, "tasks": args.tasks, "out": args.out,
           "seed": args.seed, "sets": parse_set(args.sets)}
    prof = load_profile(args.cluster, args.cluster_sets)
    if args.parallelism:
        prof["array_parallelism"] = args.parallelism
    points = plan(args.name, cli)
    todo = [p for p in points if p["state"] == "submit" or (args.force and p["state"] == "completed")]
    print(f"sweep {args.name}: {len(points)} grid points, {len(todo)} to submit"
          f"{' (dry run)' if args.dry_run else ''}")
    for p in points:
        mark = "submit" if p in todo else ("skip: completed" if p["state"] == "completed" else p["state"])
        print(f"  {p['label']:<10} {p['run_id'] or '-':<44} {mark}" + (f": {p['error']}" if p["error"] else ""))
        if p["cfg"] is not None and args.dry_run:
            c = p["cfg"]
            print(f"  {'':<10} {c.objective.name}/{c.schedule.name}/{c.preset}/{c.data.name}/{c.recipe} "
                  f"tasks={','.join(c.tasks) or 'none'}")
    if args.dry_run:
        executor = args.executor or "slurm"
        if todo and executor == "slurm":
            print(f"sbatch parameters (one array of {len(todo)}):")
            print(sbatch_preview(prof, jobs_folder(args.out), len(todo)))
        return 0
    if not todo:
        print("nothing to submit: every grid point is completed")
        return 0
    executor = args.executor or "slurm"
    cfgs = [p["cfg"] for p in todo]
    if executor == "slurm":
        jobs = submit_runs(cfgs, executor, prof, force=args.force)
        print(f"submitted array {str(jobs[0].job_id).split('_')[0]} ({len(jobs)} tasks); "
              f"follow it with: python -m benchmark status --runs {args.out}")
        return 0
    step = max(1, args.parallelism or 1)  # local/debug: `parallelism` runs at a time on this machine
    for i in range(0, len(cfgs), step):
        wait(submit_runs(cfgs[i:i + step], executor, prof, force=args.force))
    return 0


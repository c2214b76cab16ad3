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
    from benchmark.slurm.sweeps import MINI_SEEDS, MINI_STEPS, SWEEPS

    p.add_argument("name", help=f"sweep: {', '.join(SWEEPS)} (paper: every table and figure, each run once; mini: "
                                f"Tables 2, 4, 5, 17 at --preset tiny, {MINI_STEPS} steps, {MINI_SEEDS} seeds, on CPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs, their tasks, the estimated GPU-hours and the sbatch parameters only")
    p.add_argument("--parallelism", type=int, default=None, help="array tasks running at once (slurm_array_parallelism)")
    p.add_argument("--preset", default=None, help="override the grid's model size (e.g. tiny; rows then show †)")
    p.add_argument("--data", default=None, help="override the grid's data (synthetic | cc12m)")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps of every point")
    p.add_argument("--tasks", default=None, help="override the tasks the table reads ('none' for training only)")
    p.add_argument("--out", default="results/runs", help="runs directory (default results/runs)")
    p.add_argument("--seed", type=int, default=None, help="training seed of every point (default 0)")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help=f"run every point with seeds 0..N-1 (default 1; mini: {MINI_SEEDS})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field of every point (repeatable)")
    p.add_argument("--force", action="store_true", help="redo completed points too")
    p.add_argument("--bench", action="append", default=[], metavar="JSON",
                   help="`bench train --json` measurements (files or folders; default results/bench if present) "
                        "for the GPU-hour estimate; without one the estimate is FLOPs at an assumed MFU")
    p.add_argument("--mfu", type=float, default=None, help="assumed MFU of the FLOP estimate (default 0.4)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s per GPU of the FLOP estimate (default 989, H100 dense bf16)")
    p.add_argument("--report", action="store_true",
                   help="mini: print the tables and the paper's orderings from the records only (no training)")
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


def sweep_cli(args: argparse.Namespace) -> dict:
    """The sweep's own flags as the dict ``sweeps.point_config`` reads; ``mini`` brings its defaults."""
    from benchmark.slurm.sweeps import MINI_SEEDS, MINI_SETS, MINI_STEPS

    from benchmark.config import ConfigError, parse_set

    mini = args.name == "mini"
    sets = {**(MINI_SETS if mini else {}), **parse_set(args.sets)}
    n_seeds = args.seeds or (MINI_SEEDS if mini else None)
    if n_seeds is not None and n_seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    if n_seeds and args.seed is not None:
        raise ConfigError("--seed and --seeds exclude each other: --seeds N runs seeds 0..N-1")
    return {"preset": args.preset or ("tiny" if mini else None), "data": args.data,
            "steps": args.steps or (MINI_STEPS if mini else None), "tasks": args.tasks, "out": args.out,
            "seed": args.seed, "seeds": list(range(n_seeds)) if n_seeds else None, "sets": sets}


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def sweep_command(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from benchmark.slurm.launch import jobs_folder, load_profile, sbatch_preview, submit_runs, wait
    from benchmark.slurm.sweeps import ASSUMED_MFU, ASSUMED_PEAK_TFLOPS, estimate_hours, load_bench, plan

    if args.report:
        from benchmark.slurm.mini import report

        print(report(args.out))
        return 0
    cli = sweep_cli(args)
    prof = load_profile(args.cluster, args.cluster_sets)
    if args.parallelism:
        prof["array_parallelism"] = args.parallelism
    points = plan(args.name, cli)
    todo = [p for p in points if p["state"] == "submit" or (args.force and p["state"] == "completed")]
    print(f"sweep {args.name}: {len(points)} runs, {len(todo)} to submit{' (dry run)' if args.dry_run else ''}")
    if args.dry_run:
        bench_paths = args.bench or (["results/bench"] if Path("results/bench").is_dir() else [])
        bench = load_bench(bench_paths)
        mfu, peak = args.mfu or ASSUMED_MFU, args.peak_tflops or ASSUMED_PEAK_TFLOPS
    for p in points:
        mark = "submit" if p in todo else ("skip: completed" if p["state"] == "completed" else p["state"])
        labels = p["labels"][0] + (f" (+{len(p['labels']) - 1} rows)" if len(p["labels"]) > 1 else "")
        print(f"  {labels:<28} {p['run_id'] or '-':<44} {mark}" + (f": {p['error']}" if p["error"] else ""))
        if p["cfg"] is not None and args.dry_run:
            c = p["cfg"]
            hours, how = estimate_hours(c, bench, mfu, peak)
            p["gpu_hours"], p["how"] = hours, how
            from benchmark.train import total_steps

            print(f"  {'':<28} {c.objective.name}/{c.schedule.name}/{c.preset}/{c.data.name}/{c.recipe} seed={c.seed} "
                  f"steps={total_steps(c)} tasks={','.join(c.tasks) or 'none'}"
                  f"{' +bench sample' if p['sample'] else ''}  ~{_hours(hours)} GPU-h")
    if args.dry_run:
        est = [p for p in points if p.get("gpu_hours") is not None]
        hows = sorted({p["how"] for p in est})
        how = ", ".join(h if h != "flops" else f"FLOP count (6 N T per image) at an assumed MFU of {mfu:.0%} of "
                        f"{peak:g} TFLOP/s per GPU" for h in hows) or "-"
        print(f"estimate: {_hours(sum(p['gpu_hours'] for p in est))} GPU-hours for all {len(est)} runs, "
              f"{_hours(sum(p['gpu_hours'] for p in est if p in todo))} for the {len(todo)} to submit "
              f"(training only, no evaluation; from {how}"
              + ("; pass --bench FILE from `bench train --json` for a measured step time)" if "flops" in hows else ")"))
        executor = args.executor or ("local" if args.name == "mini" else "slurm")
        if todo and executor == "slurm":
            print(f"sbatch parameters (one array of {len(todo)}):")
            try:
                print(sbatch_preview(prof, jobs_folder(args.out), len(todo)))
            except RuntimeError as e:  # submitit looks for srun when it builds the executor
                print(f"  (no preview without Slurm here: {e})")
        return 0
    if not todo:
        print("nothing to submit: every run is completed")
        if args.name == "mini":
            from benchmark.slurm.mini import report

            print(report(args.out))
        return 0
    executor = args.executor or ("local" if args.name == "mini" else "slurm")
    cfgs, sample = [p["cfg"] for p in todo], [p["sample"] for p in todo]
    if executor == "slurm":
        jobs = submit_runs(cfgs, executor, prof, force=args.force, sample=sample)
        print(f"submitted array {str(jobs[0].job_id).split('_')[0]} ({len(jobs)} tasks); "
              f"follow it with: python -m benchmark status --runs {args.out}")
        return 0
    # local/debug: up to `parallelism` runs at a time on this machine (mini: 2, one thread each); a slot is refilled as
    # soon as its run ends, and the longest runs (bench sample, then the most trained FLOPs) go first, so no slot idles.
    from benchmark.slurm.sweeps import flop_per_image

    from benchmark.train import total_steps

    step = max(1, args.parallelism or (2 if args.name == "mini" else 1))
    cost = [flop_per_image(c) * c.train.batch_size * total_steps(c) for c in cfgs]
    order = sorted(range(len(cfgs)), key=lambda i: (not sample[i], -cost[i]))
    queue, running, done, t0 = list(order), [], 0, time.time()
    while queue or running:
        while queue and len(running) < step:
            i = queue.pop(0)
            running += submit_runs([cfgs[i]], executor, prof, force=args.force, sample=[sample[i]])
        finished = [j for j in running if j.done()]
        if not finished:
            time.sleep(1.0)
            continue
        for job in finished:
            running.remove(job)
            wait([job])
            done += 1
            el = time.time() - t0
            print(f"[sweep {args.name}] {done}/{len(cfgs)} runs done, {el / 60:.1f} min elapsed, "
                  f"~{el / done * (len(cfgs) - done) / 60:.1f} min left", flush=True)
    if args.name == "mini":
        from benchmark.slurm.mini import report

        print(report(args.out))
    return 0

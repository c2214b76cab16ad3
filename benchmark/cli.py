"""``python -m benchmark <command>``: run | eval | generate | sweep | status | table | figure | bench | cache | genref | list.

Bad input (unknown plugin, preset or key, invalid value, missing data or weights, a run folder in use) ends with
exit status 2 and one line on stderr, never a traceback. Any other error ends with one line naming the run folder
and the log holding the stack (``--debug``, anywhere on the command line, prints it instead); Ctrl-C during
training ends with one line and a resumable checkpoint (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EPILOG = """examples:
  python -m benchmark run --objective dream --schedule wm          # embedded default: tiny, synthetic, CPU
  python -m benchmark run --objective clip --steps 200 --tasks lp
  python -m benchmark run --objective dream --preset L --data cc12m --recipe paper --set data.root=/data/cc12m
  python -m benchmark list presets
  python -m benchmark status                                       # state of every run under results/runs
add --debug anywhere to print the stack of an unexpected error instead of writing it to <run>/error.log
"""


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", default="dream", help="objective plugin (see `list objectives`)")
    p.add_argument("--schedule", default=None, help="masking schedule (default: the objective's)")
    p.add_argument("--preset", default="tiny", help="model size: tiny | B | L | H | G")
    p.add_argument("--recipe", default="official", help="official (released scripts) | paper (paper text)")
    p.add_argument("--data", default=None, help="synthetic | cc12m (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (schedules scale with it)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated tasks, or 'none' (default: the preset's; tiny: every task's synthetic stand-in, "
                        "e.g. lp/synthetic). A real name (lp, fid/coco, seg, ...) needs its data set: see `list tasks`")
    p.add_argument("--out", default=None, help="runs directory (default results/runs)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 0); runs differing only in it "
                                                          "are averaged by the tables")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--force", action="store_true", help="start the run over even if a record exists")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field (repeatable)")
    p.add_argument("--include", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import a plugin module or .py file first (stored in the config)")


def config_from_args(args: argparse.Namespace):
    from benchmark import registry
    from benchmark.config import build_config, parse_set

    for inc in args.include:
        registry.include(inc)
    registry.objectives.get(args.objective)
    if args.schedule is not None:
        registry.schedules.get(args.schedule)
    overrides: dict[str, object] = {}
    if args.data is not None:
        overrides["data.name"] = args.data
    if args.steps is not None:
        overrides["train.steps"] = str(args.steps)
        if args.steps <= 0:
            from benchmark.config import ConfigError

            raise ConfigError(f"--steps must be a positive integer, got {args.steps}")
    if args.seed is not None and args.seed < 0:
        from benchmark.config import ConfigError

        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    if args.tasks is not None:
        overrides["tasks"] = "" if args.tasks == "none" else args.tasks
    if args.out is not None:
        overrides["out"] = args.out
    if args.seed is not None:
        overrides["seed"] = str(args.seed)
    if args.include:
        overrides["include"] = ",".join(args.include)
    overrides.update(parse_set(args.sets))
    cfg = build_config(args.objective, args.schedule, args.preset, args.recipe, overrides)
    registry.schedules.get(cfg.schedule.name)
    for t in cfg.tasks:
        registry.tasks.get(t)
    from benchmark.taskdata import preflight

    preflight(cfg, cfg.tasks)  # a real-data task without its data fails here, before training
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.run import execute

    cfg = config_from_args(args)
    if args.executor:  # submitit (issue 6): slurm | local | debug
        from benchmark.slurm.commands import run_command

        return run_command(args, cfg)
    from benchmark.records import read_record

    run_dir = execute(cfg, resume=args.resume, force=args.force)
    rec = read_record(run_dir / "record.json")
    if rec.get("status") == "interrupted":
        step = (rec.get("progress") or {}).get("step", "?")
        total = (rec.get("progress") or {}).get("total", "?")
        print(f"interrupted at step {step}/{total}: checkpoint saved in {run_dir}; continue with the same command "
              f"and --resume", file=sys.stderr)
        return 130
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a trained run (EMA weights by default) and add the metrics to its record."""
    from benchmark import registry
    from benchmark.config import ConfigError, apply, from_dict, parse_set, validate
    from benchmark.records import RunLock, read_record
    from benchmark.run import evaluate, load_run, print_summary
    from benchmark.taskdata import preflight

    run_dir = Path(args.run)
    if not (run_dir / "record.json").exists():
        raise FileNotFoundError(f"no record.json in {run_dir}: pass a run folder such as results/runs/<run_id>")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        raise ConfigError("eval --tasks is empty: name at least one task (see `python -m benchmark list tasks`)")
    for t in tasks:
        registry.tasks.get(t)
    over = parse_set(args.set)  # eval settings only: the other sections define the trained weights
    bad = [k for k in over if not k.startswith(("eval.", "task."))]
    if bad:
        raise ConfigError(f"eval --set accepts eval.* and task.* keys only (the rest define the trained run): "
                          f"{', '.join(bad)}")
    cfg = from_dict(read_record(run_dir / "record.json")["config"])
    apply(cfg, over)
    validate(cfg)
    preflight(cfg, tasks)  # missing real data fails before the weights are loaded
    if args.executor:  # submitit (issue 6)
        from benchmark.slurm.commands import eval_command

        return eval_command(args, tasks)
    with RunLock(run_dir, "eval", shared=True):  # never while the run trains; evals merge their metrics
        comps, _, rec = load_run(run_dir, use_ema=not args.no_ema, epoch=args.epoch)
        if over:
            rec.data["config"]["eval"] = cfg.to_dict()["eval"]
        for t in tasks:  # the record keeps the settings each evaluation ran with
            cfg.task_settings(t)
        rec.data["config"]["task"] = cfg.to_dict()["task"]
        evaluate(comps, cfg, rec, tasks, suffix="" if args.epoch is None else f"@{args.epoch:g}")
    print_summary(rec)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate an image (or a grid: prompts x seeds) from a trained run (issue 3)."""
    from benchmark.generate import generate_command

    check_generate_args(args)
    prompts = args.prompt or default_prompts(Path(args.run))
    res = generate_command(args.run, prompts, args.out, args.candidates, args.select_step, args.nfe, args.cfg,
                           args.cfg_schedule, args.seed, args.seeds, args.steps, args.temperature, args.rerank,
                           not args.no_ema)
    print(f"generate: {res['images']} image(s), K={res['K']} S={res['steps']} T={res['T']} NFE={res['nfe']} "
          f"in {res['seconds']:.1f}s -> {res['out']}")
    return 0


def check_generate_args(args: argparse.Namespace) -> None:
    """The generation flags, before the model is loaded (issue 14): no value silently replaced by a default."""
    import math
    import os

    from benchmark.config import ConfigError

    def bad(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    bad(args.steps is None or args.steps >= 1, f"--steps must be >= 1 (default: the run's eval.sample_steps), got {args.steps}")
    bad(args.seeds >= 1, f"--seeds must be >= 1 (images per prompt), got {args.seeds}")
    bad(args.seed >= 0, f"--seed must be >= 0, got {args.seed}")
    bad(args.candidates >= 1, f"--candidates must be >= 1, got {args.candidates}")
    bad(args.nfe is None or args.nfe >= 1, f"--nfe must be >= 1, got {args.nfe}")
    bad(args.select_step is None or args.select_step >= 0, f"--select-step must be >= 0, got {args.select_step}")
    bad(args.cfg is None or (math.isfinite(args.cfg) and args.cfg >= 0), f"--cfg must be a finite number >= 0, got {args.cfg}")
    bad(args.temperature is None or (math.isfinite(args.temperature) and args.temperature > 0),
        f"--temperature must be a finite number > 0, got {args.temperature}")
    bad(all(p.strip() for p in args.prompt), "--prompt must not be empty")
    out = Path(args.out)
    bad(out.suffix.lower() in (".png", ".jpg", ".jpeg"), f"--out {out}: give an image file name ending in .png or .jpg")
    parent = next((d for d in [out.parent, *out.parent.parents] if d.exists()), Path("."))
    bad(parent.is_dir() and os.access(parent, os.W_OK) and (not out.exists() or os.access(out, os.W_OK)),
        f"--out {out}: {parent if not out.exists() else out} is not writable")


def default_prompts(run_dir: Path) -> list[str]:
    """A caption the run's data speaks: the synthetic vocabulary for synthetic runs (it has no "white background")."""
    from benchmark.config import from_dict
    from benchmark.records import read_record

    if not (run_dir / "record.json").exists():
        return ["a photo of a dog on the beach"]  # generate_command reports the missing record
    cfg = from_dict(read_record(run_dir / "record.json")["config"])
    from benchmark.run import sample_prompts

    return sample_prompts(cfg, 1)


def cmd_bench_sample(args: argparse.Namespace) -> int:
    """Table-6 rows of a trained run (--run: throughput at a fixed NFE budget with the quality metrics, written into
    the record), or without --run the decoding speed of a preset on random weights (eager vs --compile)."""
    from benchmark.bench_sample import bench_decode, bench_sample, format_rows

    if args.run:
        print(format_rows(bench_sample(args.run, args.prompts, args.decode_steps, variant=args.variant,
                                       use_ema=not args.no_ema, compile=args.compile, backend=args.backend)))
        return 0
    from benchmark.config import parse_set

    res = bench_decode(args.preset, args.batch, args.decode_steps, args.compile, args.device, parse_set(args.sets),
                       runs=args.runs, backend=args.backend)
    details = res.pop("details")
    return _report_bench(f"bench sample: preset={args.preset} batch={args.batch} K=1 NFE={args.decode_steps} cfg={res['cfg']} "
                         f"compile={details['compile']} on {res['device']} (random weights; --run RUN_DIR for the Table-6 rows)",
                         res, details, args.json)


def _report_bench(header: str, res: dict, details: dict, json_path: str | None) -> int:
    """Print a bench's figures, graph-break reasons and host-sync ops; ``--json`` writes them with the command."""
    print(header)
    for k, v in res.items():
        if isinstance(v, (int, float)):
            print(f"  {k:<26} {v:.4g}")
    for reason in details["graph_break_reasons"]:
        print(f"  graph break: {reason}")
    for op, n in details["sync_ops"].items():
        print(f"  host sync: {op} x{n}")
    if json_path:
        import json

        Path(json_path).write_text(json.dumps({**res, **details, "command": " ".join(sys.argv)}, indent=1) + "\n")
        print(f"figures written to {json_path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "sample":
        return cmd_bench_sample(args)
    from benchmark.bench import bench_loader, bench_train
    from benchmark.config import parse_set

    if args.what == "loader":
        res = bench_loader(args.preset, parse_set(args.sets), batch=args.batch)
        print(f"bench loader: preset={args.preset} source={res.pop('source')}")
        for k, v in res.items():
            print(f"  {k:<26} {v:.4g}")
        return 0

    res = bench_train(args.objective, args.preset, args.batch, args.steps, args.progress, args.compile,
                      args.device, parse_set(args.sets), inputs=args.input, vae=args.vae, ratio=args.ratio,
                      warmup=args.warmup, profile=args.profile)
    details = res.pop("details")
    return _report_bench(f"bench train: objective={args.objective} preset={args.preset} batch={args.batch} "
                         f"ratio={res['ratio']:.3f} compile={args.compile} input={args.input} on {res['device']}",
                         res, details, args.json)


def cmd_cache(args: argparse.Namespace) -> int:
    """Precompute VAE moments (image + flip), T5 features and CLIP ids of the CC12M shards, resumably."""
    from benchmark.cache import cache_features

    args.steps = args.out = args.seed = None
    args.tasks = "none"  # caching evaluates nothing: the preset's tasks must not be resolved against cc12m
    args.schedule, args.include = None, []
    cfg = config_from_args(args)
    man = cache_features(cfg, batch_size=args.batch, device=args.device)
    print(f"cache: {man['n_samples']} samples in {len(man['shards'])}/{man['n_source_shards']} shards, "
          f"{man['n_corrupt_skipped']} corrupt skipped")
    return 0


def count_params(preset: str) -> dict[str, float]:
    """Parameter counts on the meta device (no memory): backbone pieces and the CLIP text tower."""
    import torch

    from benchmark.config import build_config
    from benchmark.models.backbone import Backbone
    from benchmark.models.text import ClipHead
    from benchmark.models.tokenizer import token_shape

    cfg = build_config("dream", preset=preset)
    seq_len, token_dim = token_shape(cfg.model)
    with torch.device("meta"):
        bb = Backbone(cfg.model, seq_len, token_dim, with_decoder=True)
        clip = ClipHead(cfg.objective, cfg.model.width)

    def n(mods) -> int:
        return sum(p.numel() for m in mods for p in (m.parameters() if hasattr(m, "parameters") else [m]))

    enc = n([bb.z_proj, bb.buffer, bb.encoder_pos, bb.z_proj_ln, bb.encoder_blocks, bb.encoder_norm])
    head = n([bb.head])
    aligner = n([bb.text_proj, bb.text_pos, bb.text_proj_ln, bb.aligner_blocks])
    total = n([bb])
    return {"encoder": enc, "decoder": total - enc - head - aligner, "aligner": aligner, "head": head,
            "backbone": total, "clip_text": n([clip.text]), "clip_proj": n([clip.image_proj])}


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark import registry
    from benchmark.config import PAPER_ENCODER_PARAMS, PAPER_PARAMS, PRESETS

    what = args.what
    kinds = {"objectives": registry.objectives, "schedules": registry.schedules, "tasks": registry.tasks}
    for kind, reg in kinds.items():
        if what in (None, kind):
            print(f"{kind}:")
            for name in reg.names():
                obj = reg.get(name)
                doc = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
                print(f"  {name:<10} {reg.origin(name):<34} {doc[:70]}")
                if args.verbose:  # the plugin's own settings: `--set <section>.<field>=`
                    section = f"task.{name}" if kind == "tasks" else kind[:-1]
                    caps = getattr(obj, "capabilities", None)
                    if caps is not None:
                        print(f"      capabilities: {', '.join(k for k, v in vars(caps).items() if v) or 'none'}")
                    for line in obj.Settings.describe():
                        print(f"      {section}.{line}")
    if what in (None, "presets"):
        print("presets (parameters on the meta device; backbone = encoder + decoder + text aligner + "
              "diffusion head, without the frozen T5 and the CLIP text tower):")
        for p in PRESETS:
            c = count_params(p)
            paper = f"paper {PAPER_PARAMS[p] / 1e6:,.0f}M" if p in PAPER_PARAMS else "paper —"
            enc_paper = f" (paper {PAPER_ENCODER_PARAMS[p] / 1e6:.0f}M)" if p in PAPER_ENCODER_PARAMS else ""
            print(f"  {p:<5} backbone {c['backbone'] / 1e6:8.1f}M  [{paper}]  encoder {c['encoder'] / 1e6:.1f}M"
                  f"{enc_paper}  decoder {c['decoder'] / 1e6:.1f}M  aligner {c['aligner'] / 1e6:.1f}M  "
                  f"head {c['head'] / 1e6:.1f}M  +clip text {c['clip_text'] / 1e6:.1f}M")
    if what not in (None, "objectives", "schedules", "tasks", "presets"):
        print(f"error: unknown list {what!r}; choose objectives, schedules, tasks or presets", file=sys.stderr)
        return 2
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Submit a named grid (Tables 4, 5, 7, 8, 10-17, Fig. 4) as one Slurm array (issue 6)."""
    from benchmark.slurm.commands import sweep_command

    return sweep_command(args)


def cmd_genref(args: argparse.Namespace) -> int:
    """CC12M-50K / MS-COCO-30K reference folders (+ clean-fid statistics) for fid and clip_score (issue 15)."""
    from benchmark.tasks._genref import genref_command

    return genref_command(args)


def cmd_status(args: argparse.Namespace) -> int:
    from benchmark.status import status_command

    return status_command(args.runs)


def cmd_table(args: argparse.Namespace) -> int:
    """Print paper table N with our numbers beside the paper's (reads records only)."""
    from benchmark.tables import TABLES, build_table

    if args.number not in TABLES:
        print(f"error: unknown table {args.number}; tables: {', '.join(map(str, TABLES))}", file=sys.stderr)
        return 2
    sys.stdout.write(build_table(args.number, args.runs, args.format, color=sys.stdout.isatty()))
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    """Draw paper figure 4, 6 or 7 from the records (matplotlib, Agg)."""
    from benchmark.figures import FIGURES, make_figure

    if args.number not in FIGURES:
        print(f"error: unknown figure {args.number}; figures: {', '.join(map(str, FIGURES))}", file=sys.stderr)
        return 2
    print(make_figure(args.number, args.out, args.runs))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) that point at --help instead of printing the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m benchmark", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train + evaluate one run", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_args(p_run)
    from benchmark.slurm.commands import add_executor_args, add_sweep_args

    add_executor_args(p_run)
    p_run.set_defaults(func=cmd_run)
    p_eval = sub.add_parser("eval", help="evaluate a trained run and add the metrics to its record")
    p_eval.add_argument("--run", required=True, help="run folder, e.g. results/runs/<run_id>")
    p_eval.add_argument("--tasks", default="lp", help="comma-separated tasks")
    p_eval.add_argument("--no-ema", action="store_true", help="use the live weights instead of the EMA")
    p_eval.add_argument("--epoch", type=float, default=None,
                        help="evaluate the EMA snapshot of that epoch (train.snapshot_every); metrics go to <task>@<epoch>")
    p_eval.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                        help="an eval setting for this evaluation, e.g. --set eval.fewshot_episodes=600")
    add_executor_args(p_eval)
    p_eval.set_defaults(func=cmd_eval)
    p_sweep = sub.add_parser("sweep", help="submit a paper sweep (table1..table17, fig4/6/7, paper, mini) as one array")
    add_sweep_args(p_sweep)
    p_sweep.set_defaults(func=cmd_sweep)
    p_status = sub.add_parser("status", help="one line per run: state, progress, requeues, Slurm job id")
    p_status.add_argument("--runs", default="results/runs", help="runs directory (default results/runs)")
    p_status.set_defaults(func=cmd_status)
    p_bench = sub.add_parser("bench", help="bench train / sample: step time, images/s, MFU, syncs, graph breaks")
    p_bench.add_argument("what", choices=["train", "sample", "loader"],
                         help="train: one training step | sample: decoding speed (--run: Table-6 rows of a run) | loader: data")
    p_bench.add_argument("--objective", default="dream", help="objective plugin (bench train)")
    p_bench.add_argument("--preset", default="L", help="model size: tiny | B | L | H | G")
    p_bench.add_argument("--batch", type=int, default=64, help="images per device (the released recipe: 64)")
    p_bench.add_argument("--steps", type=int, default=10, help="timed steps")
    p_bench.add_argument("--progress", type=float, default=None,
                         help="bench train without --ratio: the ratio is the schedule's mean at this fractional epoch")
    p_bench.add_argument("--compile", action="store_true",
                         help="bench train: torch.compile the step's losses | bench sample: the decoding step (beside eager)")
    p_bench.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager", "eager"],
                         help="bench sample --compile: torch.compile backend")
    p_bench.add_argument("--runs", type=int, default=2, help="bench sample without --run: timed decodes of --batch images")
    p_bench.add_argument("--ratio", type=float, default=None,
                         help="bench train: fixed mask ratio (default: the schedule's mean at the middle of masking warm-up)")
    p_bench.add_argument("--warmup", type=int, default=3, help="bench train: untimed warm-up steps (at least 3)")
    p_bench.add_argument("--profile", action="store_true",
                         help="bench train: kernel time split GEMM / attention / elementwise / idle (torch.profiler)")
    p_bench.add_argument("--json", default=None, metavar="FILE", help="bench train / sample: write the figures")
    p_bench.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run (auto: cuda if present)")
    p_bench.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                         help="override any config field (repeatable)")
    p_bench.add_argument("--input", default="cached", choices=["cached", "raw"],
                         help="raw: each step also runs the frozen VAE and T5 encoders (uncached loader)")
    p_bench.add_argument("--vae", default="sd", choices=["sd", "tiny"],
                         help="--input raw: SD kl-f8 architecture (random weights) or the tiny test VAE")
    p_bench.add_argument("--run", default=None,
                         help="bench sample: the trained run folder (Table-6 rows); without it: decoding speed on random weights")
    p_bench.add_argument("--prompts", type=int, default=0, help="bench sample: prompts per row (0: eval.sad_bench_prompts)")
    p_bench.add_argument("--decode-steps", type=int, default=64, help="bench sample: decoding steps S (the paper: 64)")
    p_bench.add_argument("--variant", default=None, help="bench sample on real data: cc12m | coco")
    p_bench.add_argument("--no-ema", action="store_true", help="bench sample: the live weights instead of the EMA")
    p_bench.set_defaults(func=cmd_bench)
    p_gen = sub.add_parser("generate", help="text-to-image from a trained run (MAR decoding, CFG, SAD)")
    p_gen.add_argument("--run", required=True, help="run folder, e.g. results/runs/<run_id>")
    p_gen.add_argument("--prompt", action="append", default=[],
                       help="caption (repeatable: one grid row each; default: a caption of the run's data)")
    p_gen.add_argument("--out", required=True, help="output PNG (prompts are written next to it as .txt)")
    p_gen.add_argument("--candidates", type=int, default=1, help="K candidates (Semantically Aligned Decoding)")
    p_gen.add_argument("--select-step", type=int, default=None, help="T: the step where the best candidate is kept")
    p_gen.add_argument("--nfe", type=int, default=None, help="budget of encoder passes, T from K*T + (S - T) = NFE")
    p_gen.add_argument("--rerank", default="self", choices=["self", "clip"], help="self (SAD) | clip (external)")
    p_gen.add_argument("--cfg", type=float, default=None, help="CFG scale (default: the run's eval.cfg)")
    p_gen.add_argument("--cfg-schedule", default=None, choices=["constant", "linear"],
                       help="CFG over the decoding steps (default: the run's eval.cfg_schedule)")
    p_gen.add_argument("--steps", type=int, default=None, help="decoding steps S (default: eval.sample_steps)")
    p_gen.add_argument("--temperature", type=float, default=None,
                       help="sampling temperature of the diffusion head, > 0 (default: the run's eval.temperature)")
    p_gen.add_argument("--seed", type=int, default=0, help="seed of the first grid column (orders and noise)")
    p_gen.add_argument("--seeds", type=int, default=1, help="images per prompt (grid columns), seeds seed..seed+n-1")
    p_gen.add_argument("--no-ema", action="store_true", help="the live weights instead of the EMA")
    p_gen.set_defaults(func=cmd_generate)
    p_ref = sub.add_parser("genref", help="build the CC12M-50K / MS-COCO-30K reference folders and their FID statistics")
    p_ref.add_argument("--out", required=True, help="reference root (then --set eval.gen_root=OUT)")
    p_ref.add_argument("--cc12m", default=None, metavar="SHARDS_ROOT", help="CC12M shards (img2dataset layout)")
    p_ref.add_argument("--shards", default="", help="brace pattern under SHARDS_ROOT, as data.shards")
    p_ref.add_argument("--holdout", type=int, default=50_000, help="held-out pairs, as data.holdout (default 50000)")
    p_ref.add_argument("--coco", default=None, metavar="COCO_ROOT", help="COCO 2014 (annotations/, val2014/)")
    p_ref.add_argument("--coco-n", type=int, default=30_000, help="COCO images (default 30000)")
    p_ref.add_argument("--seed", type=int, default=0, help="seed of the COCO image draw")
    p_ref.add_argument("--inception-path", default="", help="clean-fid Inception folder (or $DREAM_BENCH_INCEPTION)")
    p_ref.add_argument("--fid-mode", default="clean", help="clean-fid mode, as eval.fid_mode")
    p_ref.set_defaults(func=cmd_genref)

    p_cache = sub.add_parser("cache", help="precompute VAE latents, T5 features, CLIP ids of CC12M (resumable)")
    p_cache.add_argument("--objective", default="dream", help="sets the CLIP context length it stores")
    p_cache.add_argument("--preset", default="L", help="image size, text length, T5 width come from it")
    p_cache.add_argument("--recipe", default="official", help="official: t5-large | paper: T5-XXL")
    p_cache.add_argument("--data", default="cc12m", help="the data set to cache (cc12m)")
    p_cache.add_argument("--batch", type=int, default=64, help="images per encoder call")
    p_cache.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the encoders run")
    p_cache.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                         help="e.g. data.root=/data/cc12m model.vae_path=... model.t5_path=...")
    p_cache.set_defaults(func=cmd_cache)
    p_list = sub.add_parser("list", help="objectives, schedules, tasks, presets (with origins)")
    p_list.add_argument("what", nargs="?", default=None, choices=["objectives", "schedules", "tasks", "presets"],
                        help="what to list (default: everything)")
    p_list.add_argument("-v", "--verbose", action="store_true", help="each plugin's settings: fields, types, defaults")
    p_list.set_defaults(func=cmd_list)
    p_table = sub.add_parser("table", help="paper table N: ours | paper | delta, from the run records")
    p_table.add_argument("number", type=int, help="the paper's table number, 1-17")
    p_table.add_argument("--runs", default="results/runs", help="runs directory (default results/runs)")
    p_table.add_argument("--format", default="md", choices=["md", "csv", "latex", "json"], help="output format (default md)")
    p_table.set_defaults(func=cmd_table)
    p_fig = sub.add_parser("figure", help="paper figure 4, 6 or 7 from the run records (PNG)")
    p_fig.add_argument("number", type=int, help="the paper's figure number: 4, 6 or 7")
    p_fig.add_argument("--out", required=True, help="output image, e.g. fig4.png")
    p_fig.add_argument("--runs", default="results/runs", help="runs directory (default results/runs)")
    p_fig.set_defaults(func=cmd_figure)
    return parser


# Bad input and environment problems the user fixes: exit 2, one line, no stack.
def _user_errors() -> tuple[type[BaseException], ...]:
    from benchmark.config import ConfigError
    from benchmark.records import CheckpointError, RecordError, RunLockedError
    from benchmark.registry import UnknownPluginError
    from benchmark.run import RunExistsError

    return (ConfigError, UnknownPluginError, RunExistsError, FileNotFoundError, NotADirectoryError, RecordError,
            CheckpointError, RunLockedError, PermissionError)


DISK_ERRNOS = (28, 30, 122)  # ENOSPC, EROFS, EDQUOT: the disk, not the code


def _crash_log(exc: BaseException) -> Path | None:
    """Append the stack to ``<run folder>/error.log`` (or a temp file outside any run); None if unwritable."""
    import datetime
    import tempfile
    import traceback

    from benchmark.records import RunLock

    where = RunLock.current / "error.log" if RunLock.current else Path(tempfile.gettempdir()) / "dream-bench-error.log"
    try:
        with open(where, "a") as f:
            f.write(f"--- {datetime.datetime.now(datetime.timezone.utc).isoformat()} {' '.join(sys.argv)}\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return where
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line: print the stack of an unexpected error
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from benchmark.records import RunLock

    RunLock.current = None
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = f" in {RunLock.current}" if RunLock.current else ""
        print(f"interrupted{where}; a run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- one line; the stack goes to the log (or the terminal with --debug)
        if debug:
            raise
        log = _crash_log(e)
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            print(f"error: cannot write {e.filename or RunLock.current or 'the output'}: {e.strerror}"
                  + (f" (stack in {log})" if log else ""), file=sys.stderr)
            return 2
        where = f"run folder {RunLock.current}; " if RunLock.current else ""
        stack = f"stack in {log}" if log else "stack not written (disk?)"
        print(f"error: {type(e).__name__}: {what} ({where}{stack}; --debug prints it)", file=sys.stderr)
        return 1

#!/usr/bin/env bash
# Issue 12 GPU check (<= 10 min on one H100/H200): DREAM-L step at ratios 0.5 / 0.84 / 1.0, eager and compiled, with a
# kernel-time split (GEMM / attention / elementwise / idle) and peak memory; MAR-L beside the MAR reference code
# (LTH14/mar, read from MAR_REF, never copied) at the same batch; bench sample L K=1 64 NFE eager vs compiled.
# Figures -> results/perf/*.json and rows appended to results/perf.md (device, torch version, command).
#   MAR_REF=/path/to/LTH14/mar bash slurm/perf_gpu.sh          (from the repository root)
set -uo pipefail
OUT=${OUT:-results/perf}; mkdir -p "$OUT"
B=${BATCH:-64}; STEPS=${STEPS:-10}
dev=$(python -c "import torch; print(torch.cuda.get_device_name(0))"); tv=$(python -c "import torch; print(torch.__version__)")
row() {  # name json command
  python - "$1" "$2" "$3" "$dev" "$tv" >> results/perf.md <<'PY'
import json, sys
name, path, cmd, dev, tv = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"| {name} | failed: {e} | | | | | | | {dev} | {tv} | `{cmd}` |"); sys.exit()
g = lambda k, f="{:.1f}": f.format(r[k]) if k in r and r[k] == r[k] else "-"
print(f"| {name} | {g('step_ms')} | {g('images_per_s')} | {g('mfu', '{:.1%}')} | {g('peak_mem_gib', '{:.1f}')} | "
      f"{r.get('graph_breaks', '-')}/{r.get('host_syncs_per_step', '-')}/{r.get('recompiles_after_warmup', '-')} | "
      f"{g('profile_gemm_ms')}/{g('profile_attention_ms')}/{g('profile_elementwise_other_ms')}/{g('profile_idle_ms')} | "
      f"{g('tflop_per_step', '{:.2f}')} | {dev} | {tv} | `{cmd}` |")
PY
}
echo -e "\n### run $(date -u +%F\ %H:%M) on $dev, torch $tv\n" >> results/perf.md
echo "| step | ms/step | img/s | MFU | peak GiB | breaks/syncs/recompiles | GEMM/attn/elem/idle ms | TFLOP/step | device | torch | command |" >> results/perf.md
echo "|---|---|---|---|---|---|---|---|---|---|---|" >> results/perf.md
for r in 0.5 0.84 1.0; do
  for c in "" "--compile"; do
    j="$OUT/dream_L_r${r}${c:+_compiled}.json"
    cmd="python -m benchmark bench train --objective dream --preset L --batch $B --steps $STEPS --ratio $r --profile $c --json $j"
    timeout 240 $cmd && row "DREAM-L r=$r ${c:-eager}" "$j" "$cmd"
  done
done
j="$OUT/mar_L_compiled.json"
cmd="python -m benchmark bench train --objective mar --preset L --batch $B --steps $STEPS --compile --json $j"
timeout 180 $cmd && row "MAR-L (ours, compiled)" "$j" "$cmd"
if [ -n "${MAR_REF:-}" ]; then  # the reference MAR-L step at the same batch (bf16 autocast, AdamW, as engine_mar.py)
  PYTHONPATH="$MAR_REF" timeout 120 python - "$B" "$STEPS" >> results/perf.md <<'PY'
import sys, time, torch
from models import mar  # LTH14/mar, from MAR_REF
b, steps = int(sys.argv[1]), int(sys.argv[2])
m = mar.mar_large(img_size=256, vae_stride=16, patch_size=1, vae_embed_dim=16, mask_ratio_min=0.7, label_drop_prob=0.1,
                  class_num=1000, attn_dropout=0.1, proj_dropout=0.1, buffer_size=64, diffloss_d=3, diffloss_w=1024,
                  num_sampling_steps="100", diffusion_batch_mul=4, grad_checkpointing=False).cuda()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95))
x, y = torch.randn(b, 16, 16, 16, device="cuda"), torch.randint(0, 1000, (b,), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(x, y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(steps): step()
torch.cuda.synchronize(); ms = (time.perf_counter() - t) / steps * 1e3
print(f"| MAR-L reference (LTH14/mar) | {ms:.1f} | {b / ms * 1e3:.1f} | - | {torch.cuda.max_memory_allocated() / 2**30:.1f} | - | - | - | "
      f"{torch.cuda.get_device_name(0)} | {torch.__version__} | `MAR_REF=... slurm/perf_gpu.sh` |")
PY
else
  echo "| MAR-L reference | not run: set MAR_REF=/path/to/LTH14/mar | | | | | | | $dev | $tv | |" >> results/perf.md
fi
# bench sample K=1 at 64 NFE, L, CFG batched, random weights (speed only): eager and compiled side by side in one process
j="$OUT/sample_L_compiled.json"
cmd="python -m benchmark bench sample --preset L --batch $B --decode-steps 64 --runs 1 --compile --json $j"
timeout 420 $cmd && python - "$j" "$cmd" "$dev" "$tv" >> results/perf.md <<'PY'
import json, sys
path, cmd, dev, tv = sys.argv[1:]
r = json.load(open(path))
for mode, pre in (("eager", "eager_"), ("compiled", "")):
    print(f"| bench sample L K=1 64 NFE {mode} (paper A100: 3.39 img/s) | {r[pre + 'step_ms']:.1f} per decoding step | "
          f"{r[pre + 'images_per_s']:.2f} | - | - | {r['graph_breaks']}/{r['host_syncs_per_step']}/"
          f"{r.get('recompiles_after_warmup', '-') if mode == 'compiled' else '-'} | compile warm-up "
          f"{r.get('compile_warmup_s', 0):.0f} s, max token diff {r.get('max_token_diff_vs_eager', 0):.1e} | - | "
          f"{dev} | {tv} | `{cmd}` |")
PY
# bench sample K=1 at 64 NFE (with the quality metrics) needs a trained L run (weights and the feature cache are the user's):
if [ -n "${RUN_L:-}" ]; then
  timeout 180 python -m benchmark bench sample --run "$RUN_L" --decode-steps 64 --prompts 64 | tee "$OUT/sample_L.txt"
  echo "| bench sample L K=1 64 NFE | see $OUT/sample_L.txt (paper A100: 3.39 img/s) | | | | | | | $dev | $tv | \`bench sample --run \$RUN_L\` |" >> results/perf.md
fi
echo "done: results/perf.md"

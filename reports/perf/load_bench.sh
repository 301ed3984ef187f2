#!/usr/bin/env bash
# Side-by-side seconds per step, bench vs diffusers, on the same tiny random UNet2DModel (the CI
# gate's config: 32×32, block_out_channels 32/64, seeded random weights), DDIM 10 steps, batch 8,
# 4 batches, fp32 on the CPU with each side's default threads. Run with the machine as it is
# ("ambient") and with two extra busy loops started here ("+2 busy loops"); the 1/5/15-min load
# average is recorded before each measurement. bench runs three ways: its defaults (OpenMP
# waits passively, rayon pool = libtorch threads), libgomp's default wait (spin, then sleep:
# BENCH_NO_REEXEC=1 with OMP_WAIT_POLICY unset) and one thread. `bench doctor` shows which BLAS
# libtorch's matrix products bind to (must be the MKL libtorch bundles, as in PyTorch).
# Each case gets at most LIMIT seconds (default 120; a case over it is reported as such).
# Usage: reports/perf/load_bench.sh [OUT.md]   (default reports/perf/load_bench.md; ~3 minutes idle)
set -euo pipefail
cd "$(dirname "$0")/../.."
eval "$(./dev env 2>/dev/null)"
out_md=${1:-reports/perf/load_bench.md}
limit=${LIMIT:-120}
bin=target/release/bench
[ -x "$bin" ] || cargo build --release --locked
work=$(mktemp -d)
busy=()
cleanup() { for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
py=${BENCH_PYTHON:-python}

"$py" - "$work" <<'PY'
import sys, torch
from diffusers import UNet2DModel
torch.manual_seed(0)
UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=None, norm_eps=1e-6).eval().save_pretrained(f"{sys.argv[1]}/unet")
PY
cat > "$work/spec.yaml" <<YAML
name: load_bench
model: {kind: diffusers, path: $work/unet}
schedule: {kind: linear, beta_start: 0.0001, beta_end: 0.02, timesteps: 1000}
samplers:
  - {name: ddim, eta: 0.0, skip: uniform}
steps: 10
samples: 32
batch_size: 8
seed: 0
device: cpu
metrics: {}
save_samples: 0
YAML

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

bench_case() { # label, env...
  local label=$1; shift
  local la; la=$(loadavg)
  rm -rf "$work/out"
  if ! timeout "$limit" env "$@" "$bin" run "$work/spec.yaml" --out "$work/out" --quiet --force >/dev/null 2>&1; then
    echo "| $label | | | > ${limit} s for 4 batches (stopped) | | $la |"
    return
  fi
  "$py" - "$work/out/run.json" "$label" "$la" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
t = info["cell_timing"][0]
print(f"| {sys.argv[2]} | {info['torch_threads']} | {info.get('omp_wait_policy') or 'unset'} | "
      f"{t['seconds_per_step_median']*1e3:.1f} | {t['seconds_per_step_min']*1e3:.1f}–{t['seconds_per_step_max']*1e3:.1f} | {sys.argv[3]} |")
PY
}

diffusers_case() {
  local label=$1
  local la; la=$(loadavg)
  local row
  row=$(timeout "$limit" "$py" - "$work/unet" "$label" "$la" <<'PY'
import sys, time, statistics, torch
from diffusers import UNet2DModel, DDIMScheduler
unet = UNet2DModel.from_pretrained(sys.argv[1]).eval()
sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
per = []
with torch.inference_mode():
    unet(torch.zeros(8, 3, 32, 32), torch.tensor(999))  # warm-up, as bench does
    for b in range(4):
        sched.set_timesteps(10)
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        t0 = time.perf_counter()
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
        per.append((time.perf_counter() - t0) / 10)
print(f"| {sys.argv[2]} | {torch.get_num_threads()} | unset | {statistics.median(per)*1e3:.1f} | "
      f"{min(per)*1e3:.1f}–{max(per)*1e3:.1f} | {sys.argv[3]} |")
PY
  ) || true
  if [ -n "$row" ]; then echo "$row"; else echo "| $label | | | > ${limit} s for 4 batches (stopped) | | $la |"; fi
}

rows=()
for cond in ambient "+2 busy loops"; do
  if [ "$cond" != ambient ]; then
    for _ in 1 2; do (while :; do :; done) & busy+=($!); done
    sleep 5
  fi
  rows+=("$(diffusers_case "$cond: diffusers")")
  rows+=("$(bench_case "$cond: bench (defaults)" -u OMP_WAIT_POLICY -u BENCH_NO_REEXEC)")
  rows+=("$(bench_case "$cond: bench, libgomp default wait (spin, then sleep)" -u OMP_WAIT_POLICY BENCH_NO_REEXEC=1)")
  rows+=("$(bench_case "$cond: bench, 1 thread" -u OMP_WAIT_POLICY -u BENCH_NO_REEXEC OMP_NUM_THREADS=1)")
done

{
  echo "# Seconds per step under load: bench vs diffusers"
  echo
  echo "Command: \`reports/perf/load_bench.sh\` (writes this file). $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "Same tiny random UNet2DModel (32×32, block_out_channels 32/64), DDIM 10 steps, batch 8, fp32 CPU,"
  echo "4 timed batches after one warm-up forward; each case stopped after LIMIT s. bench: \`cell_timing\` of \`run.json\` (per-batch seconds"
  echo "per step); diffusers 0.42.1 eager in \`torch.inference_mode()\`, same per-batch timing. \"ambient\": the"
  echo "machine as it was (see the load average); \"+2 busy loops\": two"
  echo "shell busy loops started by the script on top. Load average = 1/5/15 min before each measurement."
  echo
  echo "| case | threads | OMP_WAIT_POLICY | ms/step median | min–max | load average |"
  echo "|---|---:|---|---:|---:|---|"
  printf '%s\n' "${rows[@]}"
} > "$out_md"
cat "$out_md"

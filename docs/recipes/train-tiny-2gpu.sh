#!/usr/bin/env bash
# Train spacetime-tiny on one host with two GPUs, both busy the whole time (docs/training.md).
#
#   docs/recipes/train-tiny-2gpu.sh OUT [PHASE_A_S] [PHASE_B_S]
#
# Phase A, side by side: GPU 0 trains the VAE further from the shipped weights; GPU 1 trains a
#   fresh DiT + text encoder on the shipped VAE's latents (its layout, colour and text skills
#   carry over to a VAE that has only been trained further).
# Phase B, side by side: two DiT runs continue phase A's DiT on phase A's new VAE, at two
#   learning rates (B_LRS, default "8e-4 3e-4"; one rate leaves GPU 1 free for other work).
#   Then each is evaluated (`spacetime eval`, default prompt set), and OUT/best names the better
#   export (by held-out "all right", then pairs both-right); last, bench/text_probe.py probes
#   their text encoders (OUT/text_probe.log).
# Run from the repository root; `python3 -m workers.cli` is `spacetime` without the install.
# DIT_EXTRA adds options to every DiT run, e.g. DIT_EXTRA="--pair-share 0.7 --caption-noise 0.2"
# (a larger batch needs --dit-max-batch too: --dit-voxels alone stops at 256 clips per batch).
# DIT_A_INIT=FOLDER makes phase A continue that pipeline's DiT + text encoder instead of a fresh
# one (e.g. model/weights/spacetime-tiny), at DIT_A_LR (default 1e-3).
set -uo pipefail
OUT=${1:?usage: $0 OUT [PHASE_A_S] [PHASE_B_S]}
A_S=${2:-500}
B_S=${3:-520}
mkdir -p "$OUT"
st() { python3 -m workers.cli "$@"; }
common=(--workers 10 --log-every 250 --ckpt-every-s 100000)
dit=(--dit-voxels 71303168 --timestep-shift 2 --cache-clips-per-bucket 5000 --cache-time-s 45 ${DIT_EXTRA:-})

echo "phase A: $(date -u +%T)"
CUDA_VISIBLE_DEVICES=0 st train --stage vae --init model/weights/spacetime-tiny --out "$OUT/vae" \
    --vae-frames 17 --vae-time-s "$A_S" --vae-voxels 8912896 --vae-lr 6e-4 --warmup-steps 100 \
    "${common[@]}" > "$OUT/vae.log" 2>&1 &
if [ -n "${DIT_A_INIT:-}" ]; then a_init=(--init "$DIT_A_INIT"); else a_init=(--init-vae model/weights/spacetime-tiny); fi
CUDA_VISIBLE_DEVICES=1 st train --stage dit "${a_init[@]}" --out "$OUT/ditA" \
    --dit-time-s $((A_S - 50)) --dit-lr "${DIT_A_LR:-1e-3}" --warmup-steps 200 "${dit[@]}" \
    "${common[@]}" > "$OUT/ditA.log" 2>&1 &
wait
vae="$OUT/vae/pipeline"
[ -d "$vae/vae" ] || { echo "VAE run failed; phase B keeps the shipped VAE"; vae=model/weights/spacetime-tiny; }
[ -d "$OUT/ditA/pipeline" ] || { echo "phase A DiT failed"; exit 1; }

echo "phase B: $(date -u +%T)"
read -r -a lrs <<< "${B_LRS:-8e-4 3e-4}"
runs=("${!lrs[@]}")
for i in "${runs[@]}"; do
    CUDA_VISIBLE_DEVICES=$i st train --stage dit --init "$OUT/ditA/pipeline" --init-vae "$vae" --out "$OUT/ditB$i" \
        --dit-time-s $((B_S - 50)) --dit-lr "${lrs[$i]}" --warmup-steps 100 --seed $((i + 1)) "${dit[@]}" \
        "${common[@]}" > "$OUT/ditB$i.log" 2>&1 &
done
wait

echo "eval: $(date -u +%T)"
for i in "${runs[@]}"; do
    CUDA_VISIBLE_DEVICES=$i st eval --model "$OUT/ditB$i/pipeline" --json "$OUT/eval$i.json" > "$OUT/eval$i.log" 2>&1 &
done
wait
python3 - "$OUT" "${#lrs[@]}" <<'PY'
import json, sys
from pathlib import Path
out, n = Path(sys.argv[1]), int(sys.argv[2])
def score(i):
    try:
        s = json.loads((out / f"eval{i}.json").read_text())["summary"]
    except (OSError, KeyError, ValueError):
        return (-1.0, -1.0)
    return (s["heldout"]["all_right"], s["pairs"]["all_right"])
best = max(range(n), key=score)
(out / "best").write_text(str(out / f"ditB{best}" / "pipeline") + "\n")
print("best:", best, *(score(i) for i in range(n)))
PY
# Does the text encoder bind each word to its own phrase? (docs/training.md; about a minute)
probed=(); for i in "${runs[@]}"; do probed+=("$OUT/ditB$i/pipeline"); done
python3 bench/text_probe.py "${probed[@]}" --captions 2000 > "$OUT/text_probe.log" 2>&1
cat "$OUT/text_probe.log"
echo "done: $(date -u +%T)"

#!/usr/bin/env bash
# The GPU path, checked in a few minutes on one CUDA GPU:
#   1. bf16-autocast pre-training of a small preset (loss must fall below the unigram entropy),
#   2. the training-throughput benchmark on CUDA (loop overhead and MFU vs a same-run bf16 matmul peak),
#   3. FSDP2 (fully_shard) on one device under torchrun,
#   4. greedy generation from the pre-trained model.
# Writes benchmarks/results/gpu_check.json (and benchmarks/results/train_throughput_cuda.json).
#
#   bash benchmarks/gpu_check.sh            # run from the repository root
#   PY=path/to/python bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU visible to torch')"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
T0=$(date +%s)

"$PY" - "$W" <<'PYEOF'
import json, sys
from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems
texts = pretraining_texts(sample_problems(SkillMathConfig(), 4000, seed=0, k=1))
open(f"{sys.argv[1]}/corpus.jsonl", "w").write("".join(json.dumps({"text": t}) + "\n" for t in texts))
PYEOF

COMMON=(--set "corpus=$W/corpus.jsonl" --set train.device=cuda --set train.seq_len=256
        --set tokenizer.vocab_size=300 --set train.threads=1)
s=$(date +%s)
"$PY" -m reasonlab.cli pretrain --out "$W/bf16" "${COMMON[@]}" --set train.preset=tiny-5m \
    --set train.max_steps=300 --set train.batch_size=32 --set train.eval_every=100 \
    --set train.checkpoint_every=300 --set train.distributed=none
echo $(( $(date +%s) - s )) > "$W/bf16.wall"

s=$(date +%s)
"$PY" benchmarks/train_throughput.py --quick --device cuda --threads 1 --result-name train_throughput_cuda
echo $(( $(date +%s) - s )) > "$W/throughput.wall"

s=$(date +%s)
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m reasonlab.cli pretrain \
    --out "$W/fsdp" "${COMMON[@]}" --set train.preset=tiny-2m --set train.max_steps=40 --set train.warmup_steps=4 \
    --set train.batch_size=16 --set train.eval_every=40 --set train.checkpoint_every=20 \
    --set train.distributed=fsdp
echo $(( $(date +%s) - s )) > "$W/fsdp.wall"

"$PY" - "$W" "$T0" <<'PYEOF'
import json, sys, time
from pathlib import Path
import torch
sys.path.insert(0, "benchmarks")
from _common import write_result
from reasonlab.lm.local import LocalLM

w, t0 = Path(sys.argv[1]), int(sys.argv[2])
rd = lambda p: json.loads((w / p).read_text())
wall = lambda n: int((w / f"{n}.wall").read_text())
bf16 = rd("bf16/results.json")
fsdp = rd("fsdp/results.json")
lm = LocalLM.from_pretrained(w / "bf16" / "model", device="cuda")
prompts = ["Problem: 12 + 30 =", "Problem: 7 * 8 ="] * 8
s = time.perf_counter()
gens = lm.generate(prompts, max_new_tokens=64, temperature=0.0, seed=0)
torch.cuda.synchronize()
gen_s = time.perf_counter() - s
gen_tokens = sum(len(g.token_ids) for g in gens)
tp = json.loads(Path("benchmarks/results/train_throughput_cuda.json").read_text())
checks = {
    "bf16_pretrain_loss_below_unigram": bf16["val_loss"] < bf16["unigram_entropy"],
    "fsdp_one_device_finished": fsdp["steps"] == 40 and fsdp["val_loss"] == fsdp["val_loss"],
    "generation_nonempty": all(len(g.token_ids) > 0 for g in gens),
}
out = {
    "gpu": torch.cuda.get_device_name(0), "bf16_supported": torch.cuda.is_bf16_supported(),
    "bf16_pretrain": {k: bf16.get(k) for k in ("val_loss", "unigram_entropy", "train_loss", "steps",
                                                "train_tokens", "n_params", "mfu", "model_flops_per_s")}
                     | {"preset": "tiny-5m", "wall_s": wall("bf16")},
    "throughput": {k: tp.get(k) for k in ("ours_wall_tokens_per_s", "plain_wall_tokens_per_s",
                                          "wall_overhead_pct", "mfu", "matmul_peak_gflops")}
                  | {"wall_s": wall("throughput")},
    "fsdp_one_device": {k: fsdp.get(k) for k in ("val_loss", "train_loss", "steps")} | {"wall_s": wall("fsdp")},
    "generation": {"prompts": len(prompts), "new_tokens": gen_tokens, "tokens_per_s": gen_tokens / gen_s,
                   "sample": gens[0].text[:80]},
    "checks": checks, "all_ok": all(checks.values()), "total_wall_s": int(time.time()) - t0,
    "seeds": [0], "command": "bash benchmarks/gpu_check.sh",
}
print(json.dumps(out, indent=2))
print("wrote", write_result("gpu_check", out))
sys.exit(0 if out["all_ok"] else 1)
PYEOF

"""GCG vs GCG with probe sampling on the tiny aligned chat model, and side by side with nanoGCG.

Measures (issue 16): the target's (``--target``, by default ``aligned-chat-l``: ~30x the parameters
of the draft ``aligned-chat-draft``, so the draft is much cheaper to run, as in the paper) refusal
rate on held-out AdvBench behaviours and its false
refusal rate on held-out benign requests (from the recipe's ``aligned_chat.json``); plain GCG and
probe sampling on the same held-out behaviours the model refuses, same seeds: ASR (refusal
prefixes and exact target), target forward passes and wall time needed to reach the same best loss
(the larger of the two final best losses); the found suffixes tried on the draft model (transfer);
and time per step and best loss after N steps next to nanoGCG (installed into its own virtual
environment, ``benchmarks/.venv-nanogcg``, since it pins transformers <= 4.47.1) on the same
weights, target and suffix.

    python benchmarks/gcg_probe.py --quick          # writes benchmarks/results/gcg_probe.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NANO_VENV = HERE / ".venv-nanogcg"
NANO_PINS = ["transformers==4.47.1", "tokenizers>=0.21,<0.22", "huggingface-hub<1.0", "nanogcg==0.3.0",
             "safetensors", "sentencepiece", "protobuf"]


# ---------------------------------------------------------------- nanoGCG side (its own venv)
def nanogcg_worker(spec: dict) -> dict:
    """Run nanoGCG (plain, then with probe sampling) in the nanoGCG venv; only torch,
    transformers 4.47 and nanogcg are imported here."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    import nanogcg
    from nanogcg import GCGConfig, ProbeSamplingConfig

    torch.set_num_threads(spec["threads"])

    def load(path):
        path = Path(path)
        conf = json.loads((path / "config.json").read_text())
        rope = conf.pop("rope_parameters", None) or {}
        conf["rope_theta"] = rope.get("rope_theta", conf.get("rope_theta", 500000.0))
        conf.pop("dtype", None)
        model = LlamaForCausalLM(LlamaConfig(**conf)).eval()
        model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
        tc = json.loads((path / "tokenizer_config.json").read_text())
        template = tc.get("chat_template")
        if template is None and (path / "chat_template.jinja").exists():
            template = (path / "chat_template.jinja").read_text()
        tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"),
                                      bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                      pad_token="<|finetune_right_pad_id|>")
        tok.chat_template = template
        return model, tok

    model, tok = load(spec["target"])
    draft, dtok = load(spec["draft"])
    ids = torch.tensor([spec["check_ids"]])
    with torch.no_grad():
        check = float(model(ids).logits.float().sum())
    out = {"check_logits_sum": check, "transformers": __import__("transformers").__version__}
    for name, probe in (("plain", None), ("probe", ProbeSamplingConfig(draft, dtok, r=8, sampling_factor=16))):
        cfg = GCGConfig(num_steps=spec["steps"], search_width=spec["search_width"], topk=spec["topk"],
                        optim_str_init=spec["optim_str_init"], seed=spec["seed"], early_stop=False,
                        use_prefix_cache=True, verbosity="WARNING", probe_sampling_config=probe)
        t0 = time.perf_counter()
        try:
            res = nanogcg.run(model, tok, spec["message"], spec["target_str"], cfg)
        except Exception as e:  # e.g. its probe sampling on a NaN agreement
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        wall = time.perf_counter() - t0
        out[name] = {"time_per_step_s": wall / spec["steps"], "best_loss": float(res.best_loss),
                     "losses": [float(x) for x in res.losses]}
    return out


def ensure_nanogcg_venv() -> Path | None:
    """The nanoGCG venv's python (created on first use): its own transformers 4.47 and nanogcg,
    torch and the rest taken from this environment through a .pth file. None if it fails."""
    py = NANO_VENV / "bin" / "python"

    def works() -> bool:
        site = next((NANO_VENV / "lib").glob("python3*/site-packages"))
        here = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "torch").exists())
        (site / "zz_main_venv.pth").write_text(here + "\n")
        return subprocess.run([str(py), "-c", "import nanogcg, transformers"],
                              capture_output=True).returncode == 0

    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(NANO_VENV)], check=True)
        if not works():
            subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                            "--no-deps", *NANO_PINS], check=True)
        return py if works() else None
    except (subprocess.CalledProcessError, StopIteration, OSError) as e:
        print(f"nanoGCG unavailable: {e}", file=sys.stderr)
        return None


# ---------------------------------------------------------------- our side
def to_reach(res, loss: float) -> tuple[int, float]:
    """Target forwards and wall time at the first step whose best-so-far loss is <= ``loss``."""
    for s in res.steps:
        if s.best_loss <= loss + 1e-6:
            return s.target_forwards, s.time_s
    return res.target_forwards, res.time_s


def interval(xs: list[float]) -> list[float] | None:
    """95% t-interval of the mean (None for fewer than two values)."""
    if len(xs) < 2:
        return None
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(len(xs), 2.0)
    h = t * statistics.stdev(xs) / math.sqrt(len(xs))
    return [statistics.mean(xs) - h, statistics.mean(xs) + h]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings for a loaded 2-core CPU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--behaviors", type=int, default=None, help="held-out behaviours attacked")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--search-width", type=int, default=None)
    ap.add_argument("--topk", type=int, default=None)
    ap.add_argument("--nanogcg-steps", type=int, default=None)
    ap.add_argument("--target", default="aligned-chat-l",
                    help="target model: a recipe of the model cache or an HF folder")
    ap.add_argument("--draft", default="aligned-chat-draft", help="probe-sampling draft model")
    ap.add_argument("--out", default=str(HERE / "results" / "gcg_probe.json"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from reasonlab.attacks.gcg import GCG, GCGConfig, ProbeConfig, encode_prompt
    from reasonlab.attacks.runner import judge, load_model, reply_with_suffix, resolve
    from reasonlab.models.aligned_chat import advbench_split, is_refusal

    q = args.quick
    n_beh = args.behaviors or (1 if q else 5)
    steps = args.steps or (30 if q else 250)
    width = args.search_width or (128 if q else 512)
    topk = args.topk or (64 if q else 256)
    n_steps_nano = args.nanogcg_steps or (4 if q else 20)
    init = "x x x x x x x x x x" if q else "x x x x x x x x x x x x x x x x x x x x"
    seeds = [int(s) for s in args.seeds.split(",")]
    t_start = time.time()

    target_dir, draft_dir = resolve(args.target), resolve(args.draft)
    info = json.loads((target_dir / "aligned_chat.json").read_text())
    model, tok = load_model(str(target_dir))
    draft, dtok = load_model(str(draft_dir))
    held = advbench_split(info["config"]["heldout_fraction"], info["config"]["split_seed"])[1]
    behaviours = []
    for goal, target in held:
        if is_refusal(reply_with_suffix(model, tok, goal, "", 24)):
            behaviours.append((goal, target))
        if len(behaviours) == n_beh:
            break

    def cfg(seed: int, probe: bool, n: int = steps, early: bool = True) -> GCGConfig:
        return GCGConfig(num_steps=n, search_width=width, topk=topk, optim_str_init=init, seed=seed,
                         early_stop=early, eval_batch_size=width, probe=ProbeConfig(enabled=probe))

    rows = []
    for seed in seeds:
        for bi, (goal, target) in enumerate(behaviours):
            row = {"seed": seed, "behaviour": bi, "goal": goal}
            runs = {}
            for name, probe in (("plain", False), ("probe", True)):
                res = GCG(model, tok, cfg(seed, probe), draft=(draft, dtok)).run(goal, target)
                reply = reply_with_suffix(model, tok, goal, res.best_suffix, 32, suffix_ids=res.best_ids)
                transfer = reply_with_suffix(draft, dtok, goal, res.best_suffix, 32)
                runs[name] = res
                row[name] = {"best_loss": res.best_loss, "steps": len(res.steps),
                             "target_forwards": res.target_forwards, "time_s": res.time_s,
                             "stopped_early": res.stopped_early, "suffix": res.best_suffix,
                             "reply": reply, **judge(reply, target),
                             "transfer_to_draft": judge(transfer, target),
                             "mean_alpha": (statistics.mean(s.alpha for s in res.steps)
                                            if probe and res.steps else None),
                             "best_losses": [round(s.best_loss, 4) for s in res.steps]}
            level = max(runs["plain"].best_loss, runs["probe"].best_loss)
            fp, tp = to_reach(runs["plain"], level)
            fq, tq = to_reach(runs["probe"], level)
            row.update(loss_level=level, forwards_to_level={"plain": fp, "probe": fq},
                       time_to_level={"plain": tp, "probe": tq})
            rows.append(row)
            print(f"seed {seed} behaviour {bi}: plain best {runs['plain'].best_loss:.3f} "
                  f"({fp} fwd, {tp:.0f}s to {level:.3f}); probe best {runs['probe'].best_loss:.3f} "
                  f"({fq} fwd, {tq:.0f}s)", flush=True)

    fwd_ratios, time_ratios = [], []
    for seed in seeds:
        rs = [r for r in rows if r["seed"] == seed]
        fwd_ratios.append(sum(r["forwards_to_level"]["plain"] for r in rs)
                          / max(1, sum(r["forwards_to_level"]["probe"] for r in rs)))
        time_ratios.append(sum(r["time_to_level"]["plain"] for r in rs)
                           / max(1e-9, sum(r["time_to_level"]["probe"] for r in rs)))

    def asr(name, key="success_prefix"):
        return sum(r[name][key] for r in rows) / len(rows) if rows else None

    # ---- side by side with nanoGCG: same weights, behaviour, target, suffix, B, k; no early stop
    nano = {"status": "not run"}
    goal, target = behaviours[0]
    ours = {}
    for name, probe in (("plain", False), ("probe", True)):
        res = GCG(model, tok, cfg(seeds[0], probe, n_steps_nano, early=False),
                  draft=(draft, dtok)).run(goal, target)
        ours[name] = {"time_per_step_s": res.time_s / n_steps_nano, "best_loss": res.best_loss}
    py = ensure_nanogcg_venv()
    if py is not None:
        p = encode_prompt(tok, goal, target)
        check_ids = p.before.tolist() + tok(init, add_special_tokens=False)["input_ids"] + p.after.tolist()
        with torch.no_grad():
            our_check = float(model(torch.tensor([check_ids])).logits.float().sum())
        spec = {"target": str(target_dir), "draft": str(draft_dir), "message": goal, "target_str": target,
                "steps": n_steps_nano, "search_width": width, "topk": topk, "optim_str_init": init,
                "seed": seeds[0], "threads": args.threads, "check_ids": check_ids}
        proc = subprocess.run([str(py), __file__, "--nanogcg-worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode == 0:
            nano = json.loads(proc.stdout.strip().splitlines()[-1])
            nano["status"] = "ok"
            nano["same_weights"] = abs(nano["check_logits_sum"] - our_check) <= 1e-3 * max(1.0, abs(our_check))
        else:
            nano = {"status": "failed", "reason": proc.stderr.strip().splitlines()[-1][:300]}
    else:
        nano = {"status": "unavailable", "reason": "the nanogcg package could not be installed"}

    def ratio(name):
        if nano.get("status") != "ok" or "time_per_step_s" not in nano.get(name, {}):
            return None
        return nano[name]["time_per_step_s"] / ours[name]["time_per_step_s"]

    import transformers

    result = {
        "refusal_rate_heldout": info.get("refusal_rate_heldout"),
        "false_refusal_rate": info.get("false_refusal_rate"),
        "asr_plain": asr("plain"), "asr_probe": asr("probe"),
        "asr_exact_plain": asr("plain", "success_exact"), "asr_exact_probe": asr("probe", "success_exact"),
        "asr_transfer_to_draft_plain": (sum(r["plain"]["transfer_to_draft"]["success_prefix"] for r in rows)
                                        / len(rows)) if rows else None,
        "target_forward_ratio": statistics.mean(fwd_ratios), "target_forward_ratio_ci95": interval(fwd_ratios),
        "target_forward_ratio_per_seed": fwd_ratios,
        "wall_time_ratio": statistics.mean(time_ratios), "wall_time_ratio_ci95": interval(time_ratios),
        "wall_time_ratio_per_seed": time_ratios,
        "nanogcg_step_time_ratio": ratio("plain"), "nanogcg_probe_step_time_ratio": ratio("probe"),
        "nanogcg": nano, "ours_side_by_side": ours, "nanogcg_steps": n_steps_nano,
        "seeds": seeds,
        "settings": {"quick": q, "behaviours": len(behaviours), "steps": steps, "search_width": width,
                     "topk": topk, "optim_str_init": init, "probe_sampling_factor": 16, "probe_r": 8,
                     "target_model": args.target, "draft_model": args.draft,
                     "target_params": sum(p.numel() for p in model.parameters()),
                     "draft_params": sum(p.numel() for p in draft.parameters())},
        "rows": rows,
        "machine": {"cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                    "transformers": transformers.__version__, "python": platform.python_version(),
                    "load_average_1m": os.getloadavg()[0],
                    "note": "shared, loaded machine: wall times are noisy"},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)

    fmt = lambda v: "n/a" if v is None else f"{v:.3g}"  # noqa: E731
    print("\n| metric | value |\n|---|---|")
    for k in ("refusal_rate_heldout", "false_refusal_rate", "asr_plain", "asr_probe", "asr_exact_plain",
              "asr_exact_probe", "target_forward_ratio", "wall_time_ratio", "nanogcg_step_time_ratio",
              "nanogcg_probe_step_time_ratio"):
        print(f"| {k} | {fmt(result[k])} |")
    print(f"seeds {seeds}; {len(behaviours)} behaviour(s); {steps} steps, B={width}, k={topk}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--nanogcg-worker":
        print(json.dumps(nanogcg_worker(json.loads(sys.argv[2]))))
    else:
        main()

"""Do other transformers versions read the project's saved models and tokenizers the same?

Saves tiny models through the project's save path (a base preset with Llama 3 RoPE and a
3.1-style preset with ``llama3`` RoPE scaling, seeds 0-2, each with the project's tokenizer), then
reads them with this environment's transformers (5.x) and, each in its own cached virtual
environment (``benchmarks/.venv-tf4`` for the newest 4.x the package index lists,
``benchmarks/.venv-tf<version>`` for others), with older ones: largest logit difference from the
project's logits, greedy continuations and tokenizer ids (a fixed text set and the chat template)
against the 5.x reader's. A control folder with the config.json transformers 5 alone writes shows
what an older reader made of the project's models before.

    python benchmarks/portability.py                     # the newest 4.x and 4.47.1
    python benchmarks/portability.py --readers latest    # writes benchmarks/results/portability.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _common import print_table, write_result  # noqa: E402


def env_root(version: str) -> Path:
    return HERE / (".venv-tf4" if version == "latest" else f".venv-tf{version}")


def summarize(per_case: dict, names: list[str]) -> dict:
    rows = [per_case[n] for n in names]
    errors = sorted({r["error"] for r in rows if "error" in r})
    diffs = [r["logit_max_abs_diff"] for r in rows if r.get("logit_max_abs_diff") is not None]
    out = {"logit_max_abs_diff": max(diffs) if len(diffs) == len(rows) else None,
           "greedy_identical": all(r["greedy_identical"] for r in rows),
           "tokenizer_identical": all(r["tokenizer_identical"] for r in rows)}
    if errors:
        out["errors"] = errors
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", default="latest,4.47.1",
                    help="transformers versions to read with, comma-separated ('latest': newest 4.x)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "results" / "portability.json"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch
    import transformers

    from reasonlab.lm import portable_check as pc

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="portability-") as tmp:
        cases, controls = [], []
        for seed in seeds:
            for c in pc.build_cases(Path(tmp) / f"seed{seed}", seed=seed):
                cases.append({**c, "name": f"{c['name']}/seed{seed}"})
            base = cases[-2]
            controls.append(pc.legacy_config_case(base, Path(tmp) / f"seed{seed}"))
        spec = pc.spec_for(cases + controls, threads=args.threads, max_new_tokens=args.max_new_tokens)
        ours = pc.read_here(spec)
        readers = {}
        legacy = {}
        by_preset = {p: [c["name"] for c in cases if c["name"].startswith(p + "/")] for p in pc.PRESETS}
        names = [c["name"] for c in cases]
        control_names = [c["name"] for c in controls]

        def record(version: str, theirs: dict) -> None:
            res = pc.compare(ours, theirs)
            readers[version] = {**summarize(res, names),
                                "per_preset": {p: summarize(res, ns) for p, ns in by_preset.items()}}
            legacy[version] = {"logit_max_abs_diff": max(
                (res[n]["logit_max_abs_diff"] or 0.0) for n in control_names),
                "rope_theta_read": sorted({res[n].get("rope_theta") for n in control_names}, key=str)}

        record(transformers.__version__, ours)
        for want in [v.strip() for v in args.readers.split(",") if v.strip()]:
            try:
                py, version = pc.ensure_reader_env(env_root(want), None if want == "latest" else want)
            except pc.IndexUnreachable as e:
                print(f"reader {want} skipped: {e}", file=sys.stderr)
                continue
            theirs = pc.read_with(py, spec, tmp)
            if theirs["transformers"] != version:
                raise SystemExit(f"the reader at {env_root(want)} runs transformers "
                                 f"{theirs['transformers']}, not {version}")
            record(version, theirs)
    rows = [(v, r["logit_max_abs_diff"], r["greedy_identical"], r["tokenizer_identical"],
             legacy[v]["logit_max_abs_diff"]) for v, r in readers.items()]
    print_table(rows, ("transformers", "logit max |diff|", "greedy identical", "tokenizer identical",
                       "old-layout config: logit max |diff|"))
    payload = {
        "readers": readers,
        "presets": {p: {"description": d, "seeds": seeds} for p, d in pc.PRESETS.items()},
        "older_layout_config": legacy,
        "texts": len(pc.TEXTS), "chats": len(pc.CHATS), "max_new_tokens": args.max_new_tokens,
        "seeds": seeds, "threads": args.threads, "wall_s": round(time.time() - t0, 1),
        "command": "python benchmarks/portability.py " + " ".join(sys.argv[1:]),
    }
    out = Path(args.out)
    if out.resolve() == (HERE / "results" / "portability.json").resolve():
        print(write_result("portability", payload))
    else:
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(out)


if __name__ == "__main__":
    main()

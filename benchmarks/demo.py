"""Benchmark: the end-to-end demo's wall time from an empty model cache, and what its report holds.

Runs ``reasonlab demo --quick`` and ``reasonlab demo`` as fresh processes, each with
``REASONLAB_CACHE`` pointing at an empty folder, so every model a stage needs is built inside the
timed run (the environment's creation aside, as the issue's target counts it). Each run's wall
time and exit status go to ``OUT/demo_MODE/wall.json``; ``--skip-existing`` keeps a mode whose
``wall.json`` is there instead of running it again. Writes ``benchmarks/results/demo.json`` with
``quick_minutes``, ``full_minutes``, ``stages`` (stage → minutes of the full run),
``stages_quick``, the full run's headline numbers and ``methods_in_report``.

    python benchmarks/demo.py [--quick] [--out DIR] [--skip-existing]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, write_result  # noqa: E402


def run_demo(mode: str, out: Path, threads: int) -> dict:
    """One ``reasonlab demo`` process on an empty model cache; its wall time and exit status."""
    run_dir, cache = out / f"demo_{mode}", out / f"cache_{mode}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    exe = shutil.which("reasonlab", path=str(Path(sys.executable).parent)) or "reasonlab"
    cmd = [exe, "demo", *(["--quick"] if mode == "quick" else []), "--out", str(run_dir)]
    env = dict(os.environ, REASONLAB_CACHE=str(cache), OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    rc = subprocess.call(cmd, env=env)
    rec = {"wall_s": round(time.time() - t0, 1), "rc": rc, "cache": "empty", "threads": threads}
    (run_dir / "wall.json").write_text(json.dumps(rec))
    return rec


def summarize(out: Path, modes: list[str]) -> dict:
    """demo.json's content from the runs' folders (``demo.json``, ``wall.json``, stage results)."""
    from reasonlab.report import demo_stages

    res: dict = {}
    for mode in modes:
        d = out / f"demo_{mode}"
        wall = json.loads((d / "wall.json").read_text())
        stages = json.loads((d / "demo.json").read_text())["stages"]
        res[f"{mode}_minutes"] = round(wall["wall_s"] / 60, 2)
        res[f"{mode}_exit_status"] = wall["rc"]
        res["stages" if mode == "full" else "stages_quick"] = {k: v["minutes"] for k, v in stages.items()}
        res.setdefault("stage_states", {})[mode] = sorted({v["state"] for v in stages.values()})
        done = [(n, r) for n, r, _ in demo_stages(d) if r]
        if mode == "full" or "methods_in_report" not in res:
            res["methods_in_report"] = [r.get("method", n) for n, r in done]
        if mode == "full":
            res["headlines_full"] = {n: {k: r["headline"].get(k)
                                         for k in ("measured", "value", "interval", "verdict")}
                                     for n, r in done}
    res["how"] = ("wall time of each `reasonlab demo` process, start to exit, with an empty model "
                  "cache (every model a stage needs is built in the run), the environment already "
                  "created")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="time only `reasonlab demo --quick`")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_demo"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (recorded)")
    ap.add_argument("--skip-existing", action="store_true",
                    help="keep a mode whose OUT/demo_MODE/wall.json exists")
    args = ap.parse_args()
    modes = ["quick"] if args.quick else ["quick", "full"]
    for mode in modes:
        if not (args.skip_existing and (args.out / f"demo_{mode}" / "wall.json").exists()):
            run_demo(mode, args.out, args.threads)
    res = summarize(args.out, modes)
    path = write_result("demo_quick" if args.quick else "demo",
                        {**res, "threads": args.threads, "seeds": [0],
                         "command": "python benchmarks/demo.py" + (" --quick" if args.quick else "")})
    print_table([(m, f"{res[f'{m}_minutes']:.1f}", res[f"{m}_exit_status"]) for m in modes],
                ("mode", "minutes", "exit status"))
    print(f"{len(res['methods_in_report'])} methods in the report; wrote {path}")


if __name__ == "__main__":
    main()

"""Replay bad inputs and reruns through the real ``reasonlab`` command line.

Each case runs ``python -m reasonlab.cli ...`` in a scratch folder, as a new user would, and is
scored: an error case is *clear* when it exits non-zero with one ``error: ...`` line that names
the problem (a needle per case) and no traceback; a rerun case must keep the earlier run's
results byte for byte (otherwise it counts in ``work_lost``). Then every runnable README example
is parsed against the CLI and its config classes, and the fast ones run as written (the rest run
in ``pytest -m slow tests/test_readme.py``).

    python benchmarks/cli_faults.py [--quick] [--threads 1]

Writes benchmarks/results/cli_faults.json: cases, clear_errors, work_lost, readme_examples_run,
readme_examples_total (and each case's outcome).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from _common import print_table, write_result  # noqa: E402

TINY = ["train.preset=tiny-0.5m", "train.seq_len=64", "train.batch_size=4", "train.max_steps=3",
        "train.warmup_steps=1", "train.eval_every=3", "train.eval_batches=1",
        "train.checkpoint_every=3", "train.device=cpu", "tokenizer.vocab_size=300"]


def sets(*items: str) -> list[str]:
    out = []
    for s in items:
        out += ["--set", s]
    return out


class Bench:
    def __init__(self, work: Path, threads: int):
        self.work = work
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
        self.rows: list[dict] = []

    def cli(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reasonlab.cli", *argv], cwd=self.work,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def error_case(self, name: str, argv: list[str], needle: str, *, keep: Path | None = None,
                   no_dir: Path | None = None) -> None:
        before = _snapshot(keep)
        t = time.time()
        r = self.cli(*argv)
        lines = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
        clear = (r.returncode != 0 and "Traceback" not in r.stderr + r.stdout and len(lines) == 1
                 and needle in lines[0])
        if no_dir is not None and no_dir.exists():
            clear = False
        lost = keep is not None and _snapshot(keep) != before
        message = lines[0] if lines else (r.stderr.strip().splitlines() or [""])[-1]
        self.rows.append({"case": name, "kind": "error", "exit": r.returncode, "clear": clear,
                          "work_lost": lost, "message": message.replace(str(self.work), "WORK")[:160],
                          "seconds": round(time.time() - t, 1)})

    def rerun_case(self, name: str, argv: list[str], keep: Path, needle: str) -> None:
        before = _snapshot(keep)
        t = time.time()
        r = self.cli(*argv)
        ok = r.returncode == 0 and needle in r.stderr + r.stdout
        self.rows.append({"case": name, "kind": "rerun", "exit": r.returncode, "clear": ok,
                          "work_lost": _snapshot(keep) != before,
                          "message": needle if ok else (r.stderr.strip().splitlines() or [""])[-1]
                          .replace(str(self.work), "WORK")[:160],
                          "seconds": round(time.time() - t, 1)})


def _snapshot(run: Path | None) -> dict | None:
    if run is None or not run.exists():
        return None
    snap = {}
    for name in ("results.json", "metrics.jsonl", "model/model.safetensors", "config.json"):
        p = run / name
        snap[name] = p.read_bytes() if p.exists() else None
    return snap


def run_cases(b: Bench, quick: bool) -> None:
    w = b.work
    corpus = w / "a.txt"
    corpus.write_text("\n\n".join(f"Tom has {i} apples and buys {i % 7} more. The answer is "
                                  f"{i + i % 7}." for i in range(60)) + "\n")
    other = w / "b.txt"
    other.write_text(corpus.read_text().replace("apples", "pears"))
    run = w / "runs" / "pre"
    base = ["pretrain", "--out", str(run), *sets(*TINY, f"corpus={corpus}")]
    r = b.cli(*base)
    assert r.returncode == 0, r.stderr[-2000:]

    # Runs must never mix or lose work.
    b.error_case("rerun with another corpus, limit and val_fraction",
                 ["pretrain", "--out", str(run), *sets(*TINY, f"corpus={other}", "limit=40",
                                                       "val_fraction=0.1")],
                 "corpus:", keep=run)
    b.error_case("rerun with another tokenizer.vocab_size",
                 ["pretrain", "--out", str(run), *sets(*TINY, f"corpus={corpus}",
                                                       "tokenizer.vocab_size=320")],
                 "tokenizer.vocab_size: 300 there, 320 now", keep=run)
    b.rerun_case("finished run rerun with the same config", base, run, "already finished")
    b.error_case("unknown preset", ["pretrain", "--out", str(w / "r1"),
                                    *sets(*TINY, f"corpus={corpus}", "train.preset=tiny-9m")],
                 "unknown preset 'tiny-9m'", no_dir=w / "r1")
    b.error_case("unknown device", ["pretrain", "--out", str(w / "r2"),
                                    *sets(*TINY, f"corpus={corpus}", "train.device=gpu0")],
                 "'gpu0' is not a device", no_dir=w / "r2")
    b.error_case("NaN learning rate", ["pretrain", "--out", str(w / "r3"),
                                       *sets(*TINY, f"corpus={corpus}", "train.lr=.nan")],
                 "not a finite number", no_dir=w / "r3")
    b.error_case("batch ramp vs micro-batch",
                 ["pretrain", "--out", str(w / "r4"),
                  *sets(*TINY, f"corpus={corpus}", "train.micro_batch_size=4",
                        "train.batch_ramp=[[100, 6]]")], "micro_batch_size", no_dir=w / "r4")
    b.error_case("unknown config key", ["pretrain", "--out", str(w / "r5"),
                                        *sets("train.max_stepz=3")], "unknown config key 'train.max_stepz'")
    b.error_case("integer key given a word", ["pretrain", "--out", str(w / "r5"),
                                              *sets("train.max_steps=abc")], "must be an integer")
    b.error_case("override without '='", ["pretrain", "--out", str(w / "r5"), "--set", "foo"],
                 "must look like key=value")
    bad_yaml = w / "bad.yaml"
    bad_yaml.write_text("train:\n  max_steps: 3\n bad: [\n")
    b.error_case("malformed YAML", ["pretrain", "--out", str(w / "r6"), "--config", str(bad_yaml)],
                 "bad.yaml line")
    b.error_case("missing corpus file", ["pretrain", "--out", str(w / "r7"),
                                         *sets(*TINY, f"corpus={w / 'missing.txt'}")],
                 "corpus file not found", no_dir=w / "r7")
    b.error_case("corpus named math (no train split)",
                 ["pretrain", "--out", str(w / "r8"), *sets(*TINY, "corpus=math")],
                 "no split 'train'", no_dir=w / "r8")
    (w / "skillmath").mkdir(exist_ok=True)
    b.error_case("corpus name that is also a folder",
                 ["pretrain", "--out", str(w / "r9"), *sets(*TINY, "corpus=skillmath")],
                 "both a data set name and the path", no_dir=w / "r9")
    (w / "empty").mkdir(exist_ok=True)
    b.error_case("report on an empty folder", ["report", str(w / "empty"), "-o", str(w / "r.html")],
                 "no runs in")

    # Models: say what is wrong.
    model = run / "model"
    b.error_case("generate from the run folder", ["generate", "--model", str(run), "--prompt", "hi"],
                 "did you mean")
    b.error_case("prompt longer than the context",
                 ["generate", "--model", str(model), "--prompt", "Tom has 3 apples. " * 400,
                  "--max-new-tokens", "2"], "longer than the model's context")
    b.error_case("bad escape in --prompt", ["generate", "--model", str(model), "--prompt", "a \\x1"],
                 "bad backslash escape")
    damaged = w / "damaged"
    shutil.copytree(model, damaged / "trunc")
    shutil.copytree(model, damaged / "flip")
    wt = damaged / "trunc" / "model.safetensors"
    wt.write_bytes(wt.read_bytes()[: wt.stat().st_size // 2])
    b.error_case("truncated model.safetensors",
                 ["generate", "--model", str(damaged / "trunc"), "--prompt", "hi"], "model.safetensors")
    b.error_case("truncated model.safetensors, --no-verify",
                 ["generate", "--model", str(damaged / "trunc"), "--prompt", "hi", "--no-verify"],
                 "model.safetensors")
    wf = damaged / "flip" / "model.safetensors"
    data = bytearray(wf.read_bytes())
    data[-64:-48] = b"\xff" * 16
    wf.write_bytes(bytes(data))
    b.error_case("corrupted bytes in model.safetensors",
                 ["generate", "--model", str(damaged / "flip"), "--prompt", "hi"], "SHA-256 differs")
    b.error_case("unknown data set", ["data", "show", "gsm9k"], "unknown data set 'gsm9k'")
    b.error_case("DPO with inputs that do not exist",
                 ["posttrain", "dpo", "--out", str(w / "d1"), *sets(f"model={w / 'nope'}",
                                                                  f"pairs={w / 'p.jsonl'}")],
                 "not found")
    b.error_case("warmup_steps beyond max_steps",
                 ["pretrain", "--out", str(w / "r10"),
                  *sets(*TINY, f"corpus={corpus}", "train.warmup_steps=5")],
                 "'train.warmup_steps' = 5 and config key 'train.max_steps' = 3", no_dir=w / "r10")
    pairs = [{"prompt": f"Tom has {i} apples. The answer is ", "chosen": f"{i}.",
              "rejected": f"{i + 1}."} for i in range(4)]
    p1, p2 = w / "p1.jsonl", w / "p2.jsonl"
    p1.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    p2.write_text("".join(json.dumps(p) + "\n" for p in pairs[:3]))
    dpo = ["posttrain", "dpo", "--out", str(w / "dpo")]
    dpo_sets = ["dpo.epochs=1", "dpo.batch_size=2", "threads=1"]
    r = b.cli(*dpo, *sets(f"model={model}", f"pairs={p1}", *dpo_sets))
    assert r.returncode == 0, r.stderr[-2000:]
    b.error_case("DPO rerun on another pairs file", [*dpo, *sets(f"model={model}", f"pairs={p2}",
                                                                 *dpo_sets)],
                 "identity.pairs.items: 4 there, 3 now", keep=w / "dpo")
    b.error_case("DPO rerun from another model",
                 [*dpo, *sets(f"model={damaged / 'flip'}", f"pairs={p1}", *dpo_sets)],
                 "identity.model.path", keep=w / "dpo")
    b.cli("pretrain", "--out", str(w / "runs" / "pre2"), *sets(*TINY, f"corpus={corpus}"))
    r = b.cli("pretrain", "--out", str(w / "runs" / "pre2"), *sets(*TINY, f"corpus={other}"),
              "--overwrite")
    rec = (w / "runs" / "pre2" / "config.json").read_text()
    b.rows.append({"case": "--overwrite with another corpus", "kind": "rerun", "exit": r.returncode,
                   "clear": r.returncode == 0 and str(other) in rec, "work_lost": False,
                   "message": "deleted and trained again on request", "seconds": None})


def readme(b: Bench) -> tuple[int, int, int, list[dict]]:
    import torch
    from typer.testing import CliRunner

    from readme_examples import examples
    from reasonlab.cli import app
    from test_readme import check_example

    runnable = [e for e in examples() if e.runnable]
    checked = ran = 0
    rows = []
    here = os.getcwd()
    torch.set_num_threads(1)
    for e in runnable:
        ok_check = True
        if e.kind == "cli":
            try:
                check_example(e)
                checked += 1
            except Exception as err:  # noqa: BLE001 - reported per example
                ok_check = False
                rows.append({"example": e.text[:80], "checked": False, "error": str(err)[:160]})
        ok_run = None
        if e.fast:
            d = Path(tempfile.mkdtemp(dir=b.work))
            for name in ("configs", "data"):
                (d / name).symlink_to(ROOT / name)
            os.chdir(d)
            try:
                if e.kind == "cli":
                    r = CliRunner().invoke(app, e.argv)
                    ok_run = r.exit_code == 0
                else:
                    exec(compile(e.text, "README.md", "exec"), {"__name__": "__readme__"})
                    ok_run = True
            except Exception:  # noqa: BLE001
                ok_run = False
            finally:
                os.chdir(here)
            ran += bool(ok_run)
        if ok_check:
            rows.append({"example": e.text[:80], "checked": e.kind == "cli", "ran": ok_run})
        elif ok_run is not None:
            rows[-1]["ran"] = ok_run
    return ran, checked, len(runnable), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the same cases (they take ~2 minutes)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp), args.threads)
        run_cases(b, args.quick)
        ran, checked, total, rrows = readme(b)
    rows = b.rows
    errors = [r for r in rows if r["kind"] == "error"]
    print_table([(r["case"][:44], r["exit"], "yes" if r["clear"] else "NO",
                  "LOST" if r["work_lost"] else "-", r["message"][:70]) for r in rows],
                ("case", "exit", "clear", "work", "message"))
    print(f"\nerror cases: {len(errors)}, clear: {sum(r['clear'] for r in errors)}; reruns: "
          f"{len(rows) - len(errors)}; work lost: {sum(r['work_lost'] for r in rows)}")
    print(f"README examples: {total} runnable, {checked} CLI examples parsed with their configs, "
          f"{ran} run as written here (the others under pytest -m slow)")
    path = write_result("cli_faults", {
        "cases": len(rows), "error_cases": len(errors),
        "clear_errors": sum(r["clear"] for r in errors),
        "reruns_as_expected": sum(r["clear"] for r in rows if r["kind"] == "rerun"),
        "work_lost": sum(r["work_lost"] for r in rows),
        "readme_examples_run": ran, "readme_examples_checked": checked,
        "readme_examples_total": total,
        "readme_examples_fast": sum(r.get("ran") is not None for r in rrows),
        "readme_examples_failed": [r["example"] for r in rrows
                                   if r.get("ran") is False
                                   or (r.get("checked") is False and "error" in r)],
        "readme_note": ("run: the quick examples that ran as written here (exit 0); the others "
                        "are parsed (CLI) and run in order by pytest -m slow tests/test_readme.py"),
        "per_case": rows, "readme": rrows, "threads": args.threads, "seeds": [0],
        "wall_s": round(time.time() - t0, 1),
        "note": "timings on a shared, loaded 2-core machine",
    })
    print(path)


if __name__ == "__main__":
    main()

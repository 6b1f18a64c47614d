"""The end-to-end demo (``reasonlab demo``): every method of the library on SkillMath and the tiny
herd, from one model-cache solver where methods share a model, into one run folder and one report.

Stages, in order (each calls its method's public runner with the smallest sensible settings; the
``quick`` settings are smaller still):

=============  ==============================================================================
solver         the shared solver from the model cache (``herd-s``; ``herd-xs`` when quick), its
               held-out accuracies and a few greedy solutions
composition    the composition law over the herd (MATH², arXiv:2407.21009 §3)
posttrain      Llama 3 post-training: rejection sampling, RS-SFT, step DPO (arXiv:2407.21783 §4)
mcts_dpo       MCTS-DPO, one round of search + step DPO (arXiv:2405.00451)
ntkeval        the NTKEval skill kernel, in context and by fine-tuning (arXiv:2405.15485)
skills         metacognitive skill labels and MATH² questions against the SkillMath oracle over
               HTTP (arXiv:2405.12205, arXiv:2407.21009)
blora          Bayesian-LoRA vs PEFT LoRA (arXiv:2406.13046)
optimizer      the learned optimizer (L3RS) vs tuned Adam (arXiv:2408.09310)
gcg            GCG with and without probe sampling (arXiv:2307.15043, arXiv:2403.01251)
ptst           PTST: the train × test prompt-template matrix of ASR (arXiv:2402.18540)
creativity     statistical creativity, conditional vs marginal training (arXiv:2401.01623)
vision         the compositional image adapter on the frozen solver (arXiv:2407.21783 §7)
=============  ==============================================================================

Every stage is a run directory ``OUT/<stage>`` (:class:`reasonlab.runs.Run`): its config.json
records the stage's settings, the method's own run lies in ``OUT/<stage>/run`` and the stage's
``results.json`` (a headline number, a table, examples, minutes) is written when it finishes — a
rerun, or a resume after a kill, skips finished stages. A stage whose method package does not
import, or that raises, leaves ``error.json`` (its one-line error) and the demo goes on; it is
tried again on the next run. ``OUT/demo.json`` lists every stage's status and minutes.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from reasonlab.runs import Run, atomic_write_json, read_json

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the stage machinery
@dataclass
class StageContext:
    """What a stage function gets: its folder, the demo folder and whether settings are quick."""

    dir: Path
    demo_dir: Path
    quick: bool

    @property
    def run_dir(self) -> Path:
        """Where the stage's method writes its own run."""
        return self.dir / "run"

    def solver(self) -> Path:
        """The shared solver's model folder (built by the model cache on first use)."""
        from reasonlab.models.cache import resolve_model

        return resolve_model(solver_recipe(self.quick))

    def solver_data(self) -> Path:
        """The SkillMath splits the shared solver was trained and tested on (written once)."""
        return solver_data(self.demo_dir, self.quick)


@dataclass(frozen=True)
class Stage:
    """One demo stage: ``fn(ctx)`` runs the method and returns the stage's results (``headline``,
    ``table``, ``examples``); ``settings(quick)`` is what is recorded in its config.json."""

    name: str
    method: str
    module: str
    fn: Callable[[StageContext], dict[str, Any]]
    settings: Callable[[bool], dict[str, Any]] = lambda quick: {}


@dataclass
class StageStatus:
    name: str
    state: str = "waiting"  # waiting, running, done, cached, failed, skipped
    seconds: float = 0.0
    error: str = ""
    started: float = field(default=0.0, repr=False)


def select_stages(stages: list[Stage], only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[Stage]:
    """The stages to run: ``only`` (when given) minus ``skip``; an unknown name is a ValueError
    that lists the known ones."""
    known = [s.name for s in stages]
    only, skip = [n for n in only if n], [n for n in skip if n]
    bad = [n for n in [*only, *skip] if n not in known]
    if bad:
        raise ValueError(f"unknown demo stage {', '.join(repr(b) for b in bad)}; "
                         f"known stages: {', '.join(known)}")
    return [s for s in stages if (not only or s.name in only) and s.name not in skip]


def _one_line(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def run_stage(stage: Stage, out: Path, quick: bool, status: StageStatus) -> dict[str, Any] | None:
    """Run one stage into ``out/<name>`` unless it has finished; record a failure in error.json."""
    import importlib

    sdir = out / stage.name
    err_path = sdir / "error.json"
    status.started = time.time()
    try:
        run = Run(sdir, {"stage": stage.name, "quick": quick, "settings": stage.settings(quick)},
                  seed=0, name=f"demo:{stage.name}")
        done = run.finished()
        if done is not None:
            status.state, status.seconds = "cached", float(done.get("seconds", 0.0))
            return done
        status.state = "running"
        importlib.import_module(stage.module)  # a method package that does not import fails here
        t0 = time.time()
        result = stage.fn(StageContext(sdir, out, quick))
        seconds = time.time() - t0
        h = result.get("headline")
        if quick and h and h.get("verdict") in ("agree", "differs"):
            h["note"] = "; ".join(x for x in (h.get("note"), f"quick settings: the number would "
                                  f"{'agree' if h['verdict'] == 'agree' else 'differ'}, but the "
                                  "run is too small to compare") if x)
            h["verdict"] = "not comparable"
        result = {"stage": stage.name, "method": stage.method, "quick": quick, **result,
                  "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2)}
        run.save_results(result)
        err_path.unlink(missing_ok=True)
        status.state, status.seconds = "done", seconds
        return result
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - a failed stage is recorded and the demo goes on
        status.state, status.error = "failed", _one_line(e)
        status.seconds = time.time() - status.started
        log.debug("stage %s failed", stage.name, exc_info=True)
        if sdir.is_dir():
            atomic_write_json(err_path, {"stage": stage.name, "method": stage.method,
                                         "error": status.error})
        return None


class Progress:
    """One live display: the stage list with each stage's status and elapsed time. On a terminal
    it redraws in place; otherwise it prints a line when a stage starts or ends."""

    SYMBOL = {"waiting": " ", "running": ">", "done": "+", "cached": "=", "failed": "x",
              "skipped": "-"}

    def __init__(self, statuses: list[StageStatus], stream: Any = None, live: bool | None = None):
        self.statuses = statuses
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.t0 = time.time()
        self._lines = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def render(self) -> str:
        rows = []
        for s in self.statuses:
            secs = time.time() - s.started if s.state == "running" else s.seconds
            t = f"{int(secs // 60):d}:{int(secs % 60):02d}" if s.state not in ("waiting", "skipped") else ""
            extra = f"  {s.error}" if s.error else ""
            rows.append(f" [{self.SYMBOL[s.state]}] {s.name:<12} {s.state:<8} {t:>6}{extra}")
        total = time.time() - self.t0
        return (f"reasonlab demo — {int(total // 60)}:{int(total % 60):02d} elapsed\n"
                + "\n".join(rows) + "\n")

    def update(self, changed: StageStatus | None = None) -> None:
        if self.live:
            text = self.render()
            if self._lines:
                self.stream.write(f"\x1b[{self._lines}F\x1b[J")
            self.stream.write(text)
            self._lines = text.count("\n")
        elif changed is not None:
            extra = f" ({changed.error})" if changed.error else ""
            self.stream.write(f"demo: {changed.name} {changed.state} "
                              f"[{changed.seconds / 60:.1f} min]{extra}\n")
        self.stream.flush()

    def __enter__(self) -> "Progress":
        if self.live:
            self.update()

            def tick() -> None:
                while not self._stop.wait(1.0):
                    self.update()

            self._thread = threading.Thread(target=tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.live:
            self.update()


def run_stages(stages: list[Stage], out: str | Path, quick: bool = False, *,
               only: Iterable[str] = (), skip: Iterable[str] = (), stream: Any = None,
               live: bool | None = None) -> dict[str, Any]:
    """Run the selected stages into ``out``; returns (and writes to ``out/demo.json``) every
    stage's status and minutes. Stages left out by ``only``/``skip`` are listed as skipped."""
    chosen = {s.name for s in select_stages(stages, only, skip)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    statuses = [StageStatus(s.name, "waiting" if s.name in chosen else "skipped") for s in stages]
    with Progress(statuses, stream, live) as progress:
        for stage, st in zip(stages, statuses):
            if st.state == "skipped":
                continue
            st.state, st.started = "running", time.time()
            if not progress.live:
                progress.update(st)
            run_stage(stage, out, quick, st)
            progress.update(st)
    summary = {"quick": quick, "minutes": round((time.time() - progress.t0) / 60, 2),
               "stages": {s.name: {"state": s.state, "minutes": round(s.seconds / 60, 2),
                                   **({"error": s.error} if s.error else {})} for s in statuses}}
    atomic_write_json(out / "demo.json", summary)
    return summary


# ---------------------------------------------------------------------------- shared pieces
def solver_recipe(quick: bool) -> str:
    """The model-cache recipe every solver-based stage shares."""
    return "herd-xs" if quick else "herd-s"


def solver_data(demo_dir: Path, quick: bool) -> Path:
    """``demo_dir/data``: the shared solver's SkillMath splits, generated from its recipe's data
    config (deterministic), written once."""
    from reasonlab.data.skillmath import generate, write_splits
    from reasonlab.models.recipes import get_recipe

    d = demo_dir / "data" / solver_recipe(quick)
    if not (d / "train.jsonl").exists():
        cfg = get_recipe(solver_recipe(quick)).config_for(False)
        write_splits(generate(cfg.data), d)
    return d


def ci(res: dict[str, Any], key: str) -> list[float] | None:
    v = res.get(key)
    return [float(v[0]), float(v[1])] if isinstance(v, (list, tuple)) and len(v) == 2 else None


def headline(measured: str, value: Any, interval: list[float] | None, claim: str,
             verdict: str, note: str = "") -> dict[str, Any]:
    """The summary-table row of a stage: what was measured, our number and interval, the paper's
    claim and ``agree`` / ``differs`` / ``not comparable``."""
    if verdict not in ("agree", "differs", "not comparable"):
        raise ValueError(f"verdict {verdict!r} must be agree, differs or not comparable")
    return {"measured": measured, "value": value, "interval": interval, "claim": claim,
            "verdict": verdict, "note": note}


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) else "unknown"


def _pick(d: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: d[k] for k in keys if k in d}


# ---------------------------------------------------------------------------- the stages
def stage_solver(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.data.skillmath import format_prompt, read_problems
    from reasonlab.evals.accuracy import QA_STOP, is_correct
    from reasonlab.lm.local import LocalLM

    model = ctx.solver()
    res = read_json(model / "solver_results.json")
    problems = read_problems(ctx.solver_data() / "test.jsonl")[:4]
    lm = LocalLM.from_pretrained(model)
    gens = lm.generate([format_prompt(p.question) for p in problems], max_new_tokens=160,
                       stop=[QA_STOP])
    examples = [{"title": f"{p.question}  (reference {p.answer}; "
                          f"{'correct' if is_correct(g.text, p.answer) else 'wrong'})",
                 "text": g.text.strip()} for p, g in zip(problems, gens)]
    keys = [k for k in res if k.endswith("_accuracy") or k.endswith("_ci95")]
    acc = res.get("heldout_1skill_accuracy")
    keys += [k for k in ("chance_1skill", "chance_2skill") if k in res]
    return {"headline": headline("held-out 1-skill accuracy (greedy)", acc,
                                 ci(res, "heldout_1skill_ci95"),
                                 "a tiny model learns SkillMath skills it has a written form for "
                                 "(design target, no paper number)", "not comparable",
                                 f"recipe {solver_recipe(ctx.quick)}; the chance level (the most "
                                 f"common answer) is {_num(res.get('chance_1skill'))}"),
            "table": _pick(res, keys), "examples": examples,
            "config": {"recipe": solver_recipe(ctx.quick)}}


def stage_composition(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.evals.composition import CompositionConfig, run_composition

    models = ["herd-xs"] if ctx.quick else ["herd-xs", "herd-s"]
    cfg = CompositionConfig(models=models, n_boot=200 if ctx.quick else 1000)
    res = run_composition(cfg, ctx.run_dir)
    e = res.get("composition_exponent")
    lo_hi = ci(res, "composition_exponent_ci95")
    verdict = "not comparable" if e is None or lo_hi is None else (
        "agree" if lo_hi[0] <= 2.0 <= lo_hi[1] else "differs")
    return {"headline": headline("composition exponent e in Y = X^e over skill pairs", e, lo_hi,
                                 "MATH² accuracy ≈ (MATH accuracy)², i.e. e ≈ 2", verdict,
                                 f"{len(models)} herd model(s)"),
            "table": _pick(res, ["composition_exponent", "composition_exponent_ci95", "pair_corr",
                                 "n_pair_points"]),
            "config": dataclasses.asdict(cfg)}


def stage_posttrain(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.posttrain import PosttrainConfig, run_posttrain
    from reasonlab.posttrain.config import SamplingConfig, llama3_dpo_config

    data = ctx.solver_data()
    q = ctx.quick
    cfg = PosttrainConfig(model=str(ctx.solver()), problems=str(data / "train.jsonl"),
                          eval_data=str(data), eval_sets=["test_k1", "test_k2"],
                          eval_limit=40 if q else 150, eval_max_new_tokens=160, threads=1,
                          sampling=SamplingConfig(k=8, n_prompts=32 if q else 96, batch_size=8,
                                                  max_new_tokens=160, temperature=0.8,
                                                  reward="answer"),
                          dpo=llama3_dpo_config(epochs=1, batch_size=8, lr=3e-5, max_len=384),
                          dpo_runs=1, average=False, pair_unit="solution")
    res = run_posttrain(cfg, ctx.run_dir, progress=True)
    sft, dpo = res.get("sft_accuracy"), res.get("rs_dpo_accuracy")
    diff = None if sft is None or dpo is None else dpo - sft
    table = {f"{name} {s}": v for name, m in res.get("models", {}).items()
             for s, v in _pooled_rows(m).items()}
    table["pairs"] = (res.get("rejection") or {}).get("pairs")
    return {"headline": headline("held-out accuracy, DPO model minus the SFT solver", diff, None,
                                 "rejection sampling + DPO improve on SFT (Llama 3 §4)",
                                 "not comparable" if diff is None else
                                 ("agree" if diff > 0 else "differs"),
                                 f"{cfg.sampling.n_prompts} prompts, one DPO run"),
            "table": table, "config": dataclasses.asdict(cfg)}


def _pooled_rows(m: dict[str, Any]) -> dict[str, Any]:
    """``accuracy`` and ``ci95`` of an evaluated model's pooled and per-set accuracies."""
    out: dict[str, Any] = {}
    for s, v in m.items():
        if isinstance(v, dict) and "accuracy" in v:
            out[f"{s} accuracy"] = v["accuracy"]
            iv = v.get("ci95") or v.get("accuracy_ci") or v.get("ci")
            if isinstance(iv, (list, tuple)) and len(iv) == 2:
                out[f"{s} accuracy ci95"] = list(iv)
    return out


def _flat_numbers(res: Any, limit: int = 40, prefix: str = "") -> dict[str, Any]:
    """The scalar numbers and [lo, hi] intervals of a result, by dotted key (at most ``limit``)."""
    out: dict[str, Any] = {}

    def walk(v: Any, key: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{key}.{k}" if key else str(k))
        elif isinstance(v, bool) or isinstance(v, (int, float)):
            out[key] = v
        elif (isinstance(v, (list, tuple)) and len(v) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            out[key] = list(v)

    walk(res, prefix)
    return out


def stage_mcts_dpo(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.reasoning.mcts import MCTSConfig
    from reasonlab.reasoning.mcts_dpo import MCTSDPOConfig, run_mcts_dpo

    data = ctx.solver_data()
    q = ctx.quick
    cfg = MCTSDPOConfig(model=str(ctx.solver()), problems=str(data / "train.jsonl"),
                        eval_data=str(data), eval_sets=["test_k2"], eval_limit=30 if q else 100,
                        rounds=1, prompts_per_round=3 if q else 12, threads=1,
                        search=MCTSConfig(n_actions=2 if q else 3, root_actions=3 if q else 4,
                                          n_iters=3 if q else 6, root_iters_mult=1,
                                          max_depth=4, max_step_tokens=48))
    res = run_mcts_dpo(cfg, ctx.run_dir, progress=True)
    examples = []
    trees = sorted(ctx.run_dir.glob("round_*/tree.html"))
    if trees:
        examples.append({"title": "one search tree (the first prompt of the last round)",
                         "html": str(trees[-1].relative_to(ctx.dir))})
    sft, pol = res.get("sft_accuracy"), res.get("mcts_dpo_accuracy")
    diff = None
    if isinstance(sft, dict) and isinstance(pol, dict):
        diff = pol.get("accuracy", 0.0) - sft.get("accuracy", 0.0)
    table = {**({f"sft {k}": v for k, v in _pooled_rows({"pooled": sft}).items()}
                if isinstance(sft, dict) else {}),
             **({f"mcts_dpo {k}": v for k, v in _pooled_rows({"pooled": pol}).items()}
                if isinstance(pol, dict) else {}),
             "generated_tokens": res.get("generated_tokens"),
             **_flat_numbers({"round": (res.get("rounds") or [{}])[-1]}, 12)}
    return {"headline": headline("held-out 2-skill accuracy, MCTS-DPO policy minus SFT", diff,
                                 None, "GSM8K +4.8 points over SFT with Mistral-7B "
                                 "(arXiv:2405.00451)", "not comparable",
                                 "one round, a handful of prompts"),
            "table": table, "examples": examples, "config": dataclasses.asdict(cfg)}


def stage_ntkeval(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.evals.ntk import NTKConfig, run_ntkeval

    q = ctx.quick
    cfg = NTKConfig(model=str(ctx.solver()), skills=["add", "sub"] if q else ["add", "sub", "mul"],
                    n_eval=6 if q else 12, n_train=8 if q else 16, k=2, ft_steps=3,
                    bootstrap=200, batch_size=16, threads=1)
    res = run_ntkeval(cfg, ctx.run_dir, progress=True)
    k = (res.get("kernels") or {}).get("icl", {}).get("token_prob", {})
    v = k.get("structure_minus_format")
    val = v.get("value") if isinstance(v, dict) else v
    iv = v.get("ci95") if isinstance(v, dict) else None
    return {"headline": headline("ICL kernel: structure minus format (token probability)", val,
                                 iv, "in context, the kernel separates math structure from "
                                 "format (> 0)", "not comparable" if val is None or iv is None
                                 else ("agree" if iv[0] > 0 else "differs")),
            "table": _flat_numbers({k2: v2 for k2, v2 in res.items() if k2 != "kernels"}, 20)
            | _flat_numbers(res.get("kernels", {}), 20, "kernels"),
            "config": dataclasses.asdict(cfg)}


SKILLS_DATA = {"n_train": 300, "n_val": 0, "n_test": 60, "n_test_template": 0, "n_test_pair": 0}


def stage_skills(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.skills.labels import LabelsConfig, run_labels
    from reasonlab.skills.math2 import Math2Config, run_math2
    from reasonlab.skills.oracle import ServedModel, default_data_config, make_oracle

    q = ctx.quick
    oracle = make_oracle(0.3, data_cfg=default_data_config(**SKILLS_DATA))
    with ServedModel(oracle) as served:
        labels = run_labels(LabelsConfig(model=served.url, n_train=24 if q else 60, n_test=0,
                                         data=SKILLS_DATA, merge="llm", votes=3),
                            ctx.dir / "labels")
        m2 = run_math2(Math2Config(model=served.url, n_pairs=8 if q else 24, data=SKILLS_DATA,
                                   seed=1), ctx.dir / "math2")
    examples = []
    queue = ctx.dir / "math2" / "queue.jsonl"
    if queue.exists():
        from reasonlab.runs import read_jsonl

        for rec in list(read_jsonl(queue))[:2]:
            examples.append({"title": "a MATH² question (oracle over HTTP, 30% corrupted replies)",
                             "text": str(rec.get("question", rec))})
    ari = labels.get("label_ari")
    return {"headline": headline("skill-label agreement with the true skills (ARI)", ari, None,
                                 "an LLM names the skills a problem needs; skill-matched "
                                 "exemplars help (arXiv:2405.12205)", "not comparable",
                                 "the oracle stands in for the LLM"),
            "table": _flat_numbers({"labels": _pick(labels, ["n_labelled", "label_ari"]),
                                    "math2": m2.get("counts", {})}, 30),
            "examples": examples}


def stage_blora(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.peft.compare import CompareConfig, run_compare

    q = ctx.quick
    cfg = CompareConfig(model=str(ctx.solver()), methods=["lora", "blora"], seeds=[0],
                        steps=10 if q else 300, eval_limit=30 if q else 100, threads=1)
    res = run_compare(cfg, ctx.run_dir, progress=True)
    red = res.get("relative_bops_reduction")
    return {"headline": headline("B-LoRA's adapter bit operations saved vs LoRA r=8", red,
                                 ci(res, "relative_bops_reduction_ci95"),
                                 "~70% fewer bit operations at on-par accuracy (GLUE, "
                                 "DeBERTaV3-base)", "not comparable" if red is None else
                                 ("agree" if red >= 0.5 else "differs"),
                                 f"{cfg.steps} steps, one seed"),
            "table": _flat_numbers(res, 30), "config": dataclasses.asdict(cfg)}


def _tiny_env(quick: bool) -> dict[str, Any]:
    return {"name": "digits", "options": {"batch_size": 32, "hidden": [16] if quick else [32],
                                          "pretrain_steps": 30 if quick else 60}}


def stage_optimizer(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.config import from_dict
    from reasonlab.optim.compare import CompareConfig, run_compare
    from reasonlab.optim.es import MetaTrainConfig, meta_train

    q = ctx.quick
    horizon = 20 if q else 40
    meta = from_dict(MetaTrainConfig, {
        "env": _tiny_env(q),
        "l3rs": {"directions": ["sgd", "momentum", "adam", "sign"], "base_lr": 0.01},
        "es": {"steps": 3 if q else 30, "pairs": 2 if q else 4, "horizon": horizon, "workers": 1,
               "train_seeds": [0, 1]}})
    meta_train(meta, ctx.dir / "meta", progress=True)
    cmp = from_dict(CompareConfig, {
        "env": _tiny_env(q), "horizon": horizon, "baselines": ["adam", "sgd_momentum"],
        "tune_seeds": [0, 1], "test_seeds": list(range(100, 104 if q else 108)),
        "settings": ["main"] if q else ["main", "long3x"], "workers": 1,
        "learned": {"l3rs": str(ctx.dir / "meta")}})
    res = run_compare(cmp, ctx.run_dir, progress=True)
    main = res.get("settings", {}).get("main", {})
    vs = main.get("learned", {}).get("l3rs", {}).get("vs_best", {})
    red = vs.get("train_loss_reduction")
    return {"headline": headline("training-loss reduction vs the best tuned baseline", red,
                                 ci(vs, "train_loss_reduction_ci95"),
                                 "beats tuned Adam in its target environment (arXiv:2408.09310)",
                                 "not comparable" if red is None else
                                 ("agree" if red > 0 else "differs"),
                                 f"{meta.es.steps} ES steps (the benchmark uses 150)"),
            "table": _flat_numbers(main, 30), "config": {"meta": dataclasses.asdict(meta),
                                                         "compare": dataclasses.asdict(cmp)}}


def stage_gcg(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.attacks.gcg import GCGConfig, ProbeConfig
    from reasonlab.attacks.runner import AttackConfig, run_attack

    q = ctx.quick
    rows = {}
    for probe in (False, True):
        gcg = GCGConfig(num_steps=4 if q else 12, search_width=32 if q else 64, topk=32,
                        optim_str_init="x x x x x x", probe=ProbeConfig(enabled=probe))
        cfg = AttackConfig(n_behaviors=1, only_refused=False, micro=q, max_new_tokens=24, gcg=gcg)
        rows["probe" if probe else "plain"] = run_attack(cfg, ctx.dir / ("probe" if probe else "plain"),
                                                         progress=True)
    examples = []
    rec = next(iter(sorted((ctx.dir / "probe" / "behaviors").glob("*.json"))), None)
    if rec is not None:
        r = read_json(rec)
        examples.append({"title": f"GCG suffix (probe sampling) for: {r.get('behavior', r.get('prompt', ''))}",
                         "text": f"suffix: {r.get('suffix', '')}\nreply: {r.get('reply', '')}"})
    plain, probe = rows["plain"], rows["probe"]
    ratio = None
    if plain.get("mean_target_forwards") and probe.get("mean_target_forwards"):
        ratio = plain["mean_target_forwards"] / probe["mean_target_forwards"]
    return {"headline": headline("target forwards, plain GCG over probe sampling", ratio, None,
                                 "3.5× speed-up (individual behaviours, Llama-2-7b-chat)",
                                 "not comparable", "one behaviour, a few steps"),
            "table": {f"{k}.{m}": v for k, r in rows.items()
                      for m, v in _flat_numbers(r, 12).items()},
            "examples": examples}


def stage_creativity(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.config import from_dict
    from reasonlab.evals.creativity_runner import CreativityConfig, run_creativity

    q = ctx.quick
    cfg = from_dict(CreativityConfig, {
        "ns": [2] if q else [2, 4], "total_works": 64 if q else 256, "unseen_creators": 2,
        "eval_works": 8 if q else 16, "evaluators": ["kl"], "dim": 16, "n_layers": 1,
        "n_heads": 2, "n_kv_heads": 1, "max_steps": 6 if q else 40, "batch_size": 4,
        "warmup_steps": 1, "threads": 1})
    res = run_creativity(cfg, ctx.run_dir)
    rows = res.get("rows", [])
    table = {}
    for r in rows:
        for key in ("heldout_kl", "unseen_kl"):
            if key in r:
                table[f"n={r['n']} {r['mode']} E0 {key.split('_')[0]}"] = r[key]
    return {"headline": headline("E₀ on held-out works (KL), marginal minus conditional at the "
                                 "largest n", _creativity_gap(rows), None,
                                 "conditional training keeps E₀ within its concentration bound; "
                                 "marginal training does not (arXiv:2401.01623)",
                                 "not comparable", "micro models, a few steps"),
            "table": table, "config": dataclasses.asdict(cfg)}


def _creativity_gap(rows: list[dict[str, Any]]) -> float | None:
    by = {(r.get("n"), r.get("mode")): r.get("heldout_kl") for r in rows if isinstance(r, dict)}
    ns = sorted({n for n, _ in by if n is not None})
    if not ns:
        return None
    c, m = by.get((ns[-1], "conditional")), by.get((ns[-1], "marginal"))
    return m - c if isinstance(c, (int, float)) and isinstance(m, (int, float)) else None


def stage_ptst(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.evals.ptst import PTSTConfig, run_ptst

    q = ctx.quick
    cfg = PTSTConfig(model="aligned-chat:micro" if q else "aligned-chat",
                     train_templates=["chat:vanilla", "chat:llama"],
                     test_templates=["chat:vanilla", "chat:llama"], seeds=[0],
                     n_train=32 if q else 200, max_steps=4 if q else 40, batch_size=8,
                     n_harmful=6 if q else 40, n_helpful=6 if q else 40, max_new_tokens=16,
                     judges=["prefix"])
    res = run_ptst(cfg, ctx.run_dir)
    ptst, same = res.get("ptst_asr"), res.get("same_template_safety_asr")
    diff = None if ptst is None or same is None else ptst - same
    table = {"ptst_asr (train vanilla, test llama)": ptst,
             "same_template_asr (train llama, test llama)": same, "base_asr": res.get("base_asr")}
    for tr, row in (res.get("matrix") or {}).items():
        for te, c in row.items():
            if isinstance(c, dict):
                table[f"train {tr} / test {te}: ASR"] = c.get("asr")
                table[f"train {tr} / test {te}: helpfulness"] = c.get("helpfulness")
    return {"headline": headline("ASR, PTST minus training and testing with the safety prompt",
                                 diff, None, "PTST keeps ASR lowest at equal helpfulness "
                                 "(arXiv:2402.18540, Table 1)", "not comparable" if diff is None
                                 else ("agree" if diff <= 0 else "differs"),
                                 f"{cfg.n_harmful} held-out AdvBench requests, one seed, "
                                 "refusal-prefix judge"),
            "table": table, "config": dataclasses.asdict(cfg)}


def stage_vision(ctx: StageContext) -> dict[str, Any]:
    from reasonlab.config import from_dict
    from reasonlab.vision.runner import MultimodalConfig, run_multimodal

    q = ctx.quick
    cfg = from_dict(MultimodalConfig, {
        "solver": str(ctx.solver()), "eval_limit": 20 if q else 100,
        "data": {"n_train": 300 if q else 2000, "n_test": 40 if q else 200},
        "encoder": {"steps": 40 if q else 300}, "adapter": {"steps": 20 if q else 200}})
    res = run_multimodal(cfg, ctx.run_dir, progress=True)
    diff = res.get("text_logit_max_abs_diff")
    return {"headline": headline("text-only logits, adapted model vs the frozen solver "
                                 "(max |difference|)", diff, None,
                                 "the compositional image adapter leaves text-only behaviour "
                                 "unchanged (Llama 3 §7)", "not comparable" if diff is None
                                 else ("agree" if diff < 1e-4 else "differs"),
                                 f"with image {_num(res.get('visual_accuracy'))}, as text "
                                 f"{_num(res.get('text_ceiling_accuracy'))}, no image "
                                 f"{_num(res.get('no_image_accuracy'))}"),
            "table": _pick(res, ["visual_accuracy", "visual_operand_read", "text_ceiling_accuracy",
                                 "text_operand_read", "no_image_accuracy", "no_image_operand_read",
                                 "text_logit_max_abs_diff", "n"]),
            "config": dataclasses.asdict(cfg)}


STAGES: list[Stage] = [
    Stage("solver", "SkillMath solver (model cache)", "reasonlab.models.herd", stage_solver),
    Stage("composition", "Composition law (MATH²)", "reasonlab.evals.composition", stage_composition),
    Stage("posttrain", "Llama 3 post-training (RS + DPO)", "reasonlab.posttrain", stage_posttrain),
    Stage("mcts_dpo", "MCTS-DPO", "reasonlab.reasoning.mcts_dpo", stage_mcts_dpo),
    Stage("ntkeval", "NTKEval", "reasonlab.evals.ntk", stage_ntkeval),
    Stage("skills", "Skill labels and MATH² (oracle over HTTP)", "reasonlab.skills.math2",
          stage_skills),
    Stage("blora", "Bayesian-LoRA vs LoRA", "reasonlab.peft.compare", stage_blora),
    Stage("optimizer", "Learned optimizer (L3RS) vs Adam", "reasonlab.optim.compare",
          stage_optimizer),
    Stage("gcg", "GCG with and without probe sampling", "reasonlab.attacks.runner", stage_gcg),
    Stage("ptst", "PTST (prompt templates and safety)", "reasonlab.evals.ptst", stage_ptst),
    Stage("creativity", "Statistical creativity", "reasonlab.evals.creativity_runner",
          stage_creativity),
    Stage("vision", "Compositional image adapter", "reasonlab.vision.runner", stage_vision),
]
STAGES = [dataclasses.replace(s, settings=(lambda quick, _n=s.name: {"solver": solver_recipe(quick)}
                                           if _n in ("solver", "posttrain", "mcts_dpo", "ntkeval",
                                                     "blora", "vision") else {}))
          for s in STAGES]


def run_demo(out: str | Path, quick: bool = False, *, only: Iterable[str] = (),
             skip: Iterable[str] = (), stages: list[Stage] | None = None,
             stream: Any = None, live: bool | None = None) -> tuple[Path, dict[str, Any]]:
    """Run every selected stage into ``out``, then write ``out/report.html``; returns the report
    path and the demo summary (``stages``: state and minutes of each)."""
    from reasonlab.report import write_demo_report

    stages = STAGES if stages is None else stages
    select_stages(stages, only, skip)  # unknown names fail before any work
    summary = run_stages(stages, out, quick, only=only, skip=skip, stream=stream, live=live)
    report = write_demo_report(Path(out), Path(out) / "report.html")
    return report, summary

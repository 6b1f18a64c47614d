"""MCTS-DPO: iterative, on-policy step-level preference learning from tree search (Xie et al.,
arXiv:2405.00451 §2.3 and Algorithm 1; public code YuxiXie/MCTS-DPO,
``mcts_rl/algorithms/mcts/trainer.py``).

Each round: search (:mod:`reasonlab.reasoning.mcts`) over a batch of training prompts with the
current policy → step-level pairs at each depth of every committed path (chosen = highest Q,
rejected = lowest Q among siblings, at most ``max_pairs_per_prompt``, the loss on the step tokens
only) with a per-pair ε from the visit counts → a conservative-DPO update
(:func:`reasonlab.training.dpo.train_dpo`) with the reference fixed at the SFT model → the next
round searches with the updated policy.

:func:`run_mcts_dpo` writes one run directory and resumes after a kill at any point: every
finished search is kept as ``round_R/trees/NNNN.json`` (a killed round searches only the prompts
left), the round's pairs as ``round_R/pairs.jsonl``, its model as ``round_R/model`` (published by a
rename when DPO finished), ``round_R/tree.html`` shows the round's first search; metrics per round
go to ``metrics.jsonl`` and held-out accuracy of the SFT and final models to ``results.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from reasonlab.config import check_choice, check_range
from reasonlab.data.answers import FORMATS
from reasonlab.evals.skillmath_eval import EVAL_SETS
from reasonlab.lm.portable import make_portable
from reasonlab.reasoning.mcts import MCTSConfig, search
from reasonlab.training.dpo import DPOConfig

log = logging.getLogger(__name__)


def mcts_dpo_dpo_config(**kw: Any) -> DPOConfig:
    """The DPO update of one round: β 0.1 (the paper), no NLL term, a small learning rate sized for
    the tiny herd, step tokens only (no EOS appended to a step)."""
    base = dict(beta=0.1, loss_type="sigmoid", nll_weight=0.0, lr=3e-5, warmup_steps=2,
                lr_schedule="constant", epochs=2, batch_size=8, max_len=384, append_eos=False,
                exclude_format_tokens=True)
    base.update(kw)
    return DPOConfig(**base)


@dataclass
class MCTSDPOConfig:
    """``reasonlab mcts-dpo``: ``rounds`` of search over ``prompts_per_round`` training prompts →
    step pairs → DPO, then held-out evaluation of the SFT model and the last round's model."""

    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    model: str = ""                  # the SFT model: a folder or a model-cache recipe (herd-m)
    problems: str = ""               # training prompts (JSONL of problems)
    eval_data: str = ""              # a SkillMath split folder with test.jsonl ("" = no evaluation)
    eval_sets: list[str] = field(default_factory=lambda: ["test_k2", "test_k3"])
    eval_limit: int = 100
    eval_max_new_tokens: int = 160
    eval_batch_size: int = 64
    rounds: int = 2
    prompts_per_round: int = 16
    max_pairs_per_prompt: int = 8
    answer_format: str = "answer_is"
    search: MCTSConfig = field(default_factory=MCTSConfig)
    dpo: DPOConfig = field(default_factory=mcts_dpo_dpo_config)

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 0, 1024)
        check_range("rounds", self.rounds, 1, 100)
        check_range("prompts_per_round", self.prompts_per_round, 1, 1_000_000)
        check_range("max_pairs_per_prompt", self.max_pairs_per_prompt, 1, 1024)
        check_range("eval_limit", self.eval_limit, 0)
        check_choice("answer_format", self.answer_format, FORMATS)
        for s in self.eval_sets:
            check_choice("eval_sets", s, EVAL_SETS)


def round_prompts(problems: Sequence[Any], rounds: int, per_round: int, seed: int) -> list[list[Any]]:
    """The prompts of each round: a seeded shuffle cut into ``rounds`` slices of ``per_round``
    (wrapping around when there are too few problems)."""
    probs = list(problems)
    if not probs:
        raise ValueError("no training problems")
    random.Random(f"mcts-dpo:{seed}").shuffle(probs)
    return [[probs[(r * per_round + i) % len(probs)] for i in range(per_round)]
            for r in range(rounds)]


def search_problems(lm, problems: Sequence[Any], cfg: MCTSDPOConfig, trees_dir: Path | None, *,
                    seed: int, progress: bool = True) -> list[dict[str, Any]]:
    """One search per problem (pure when ``trees_dir`` is None, else each result is saved as
    ``trees_dir/NNNN.json`` and a saved one is read back instead of searched again)."""
    from tqdm.auto import tqdm

    from reasonlab.data.skillmath import format_prompt
    from reasonlab.evals.accuracy import is_correct
    from reasonlab.runs import atomic_write_json, read_json

    out = []
    for i, p in enumerate(tqdm(problems, desc="search", unit="prompt", disable=not progress)):
        path = trees_dir / f"{i:04d}.json" if trees_dir is not None else None
        if path is not None and path.exists():
            out.append(read_json(path))
            continue
        prompt = format_prompt(p.question)

        def check(solution: str, answer=p.answer) -> bool:
            return is_correct(solution, answer, cfg.answer_format)

        res = search(lm, prompt, check, cfg.search, seed=seed * 1_000_003 + i,
                     max_pairs=cfg.max_pairs_per_prompt)
        rec = {"id": p.id, "prompt": prompt, "answer": p.answer, **res.to_dict()}
        for q in rec["pairs"]:
            q["id"] = p.id
        if path is not None:
            atomic_write_json(path, rec)
        out.append(rec)
    return out


def _save_model(model, tokenizer, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    make_portable(tmp)  # readable by transformers 4.x too
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def run_mcts_dpo(cfg: MCTSDPOConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """The iterative loop into ``out_dir`` (resumable); returns results.json's content."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasonlab.config import ConfigError
    from reasonlab.data.skillmath import read_problems
    from reasonlab.device import torch_threads
    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import resolve_model
    from reasonlab.reasoning.tree_view import tree_html
    from reasonlab.runs import (Run, atomic_write_json, atomic_write_text, inputs_identity,
                                read_json, write_jsonl)
    from reasonlab.training.dpo import PreferencePair, train_dpo

    if not cfg.model or not cfg.problems:
        raise ConfigError("config keys 'model' (the SFT model) and 'problems' (prompts JSONL) "
                          "are required")
    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="mcts_dpo",
              identity=inputs_identity(model=cfg.model, problems=cfg.problems,
                                       eval_data=cfg.eval_data))
    done = run.finished()
    if done is not None and done.get("complete"):
        return done
    with torch_threads(cfg.threads):
        sft_dir = resolve_model(cfg.model)
        batches = round_prompts(read_problems(cfg.problems), cfg.rounds, cfg.prompts_per_round,
                                cfg.seed)
        policy_dir = sft_dir
        rounds: list[dict[str, Any]] = []
        reference = None
        for r in range(cfg.rounds):
            rd = out / f"round_{r}"
            if (rd / "model" / "config.json").exists() and (rd / "results.json").exists():
                rounds.append(read_json(rd / "results.json"))
                policy_dir = rd / "model"
                continue
            (rd / "trees").mkdir(parents=True, exist_ok=True)
            torch.manual_seed(cfg.seed * 1000 + r)
            lm = LocalLM.from_pretrained(policy_dir, device=cfg.device, dtype=torch.float32,
                                         batch_size=max(cfg.search.root_actions, 16))
            lm.reset_counters()
            recs = search_problems(lm, batches[r], cfg, rd / "trees", seed=cfg.seed * 100 + r,
                                   progress=progress)
            pairs = [q for rec in recs for q in rec["pairs"]]
            write_jsonl(rd / "pairs.jsonl", pairs)
            atomic_write_text(rd / "tree.html", tree_html(recs[0], recs[0]["prompt"],
                                                          f"MCTS-DPO round {r}: {recs[0]['id']}"))
            stats = [rec["stats"] for rec in recs]
            res: dict[str, Any] = {
                "round": r, "prompts": len(recs), "pairs": len(pairs),
                "search_accuracy": sum(bool(rec["correct"]) for rec in recs) / len(recs),
                "mean_epsilon": sum(q["epsilon"] for q in pairs) / max(1, len(pairs)),
                "generated_tokens": sum(s["generated_tokens"] for s in stats),
                "nodes": sum(s["nodes"] for s in stats),
                "search_wall_s": sum(s["wall_s"] for s in stats),
                "policy": str(policy_dir),
            }
            if pairs:
                if reference is None:
                    reference = AutoModelForCausalLM.from_pretrained(
                        str(sft_dir), local_files_only=True, use_safetensors=True,
                        dtype=torch.float32).to(lm.device).eval()
                prefs = [PreferencePair(q["prompt"], q["chosen"], q["rejected"], epsilon=q["epsilon"])
                         for q in pairs]
                dcfg = dataclasses.replace(cfg.dpo, seed=cfg.dpo.seed + 1000 * cfg.seed + r)
                drun = Run(rd / "dpo", dcfg, dcfg.seed, name="mcts_dpo_round")
                drun.restart_metrics()  # a killed update restarts from the round's policy
                dres = train_dpo(lm.model, reference, lm.tokenizer, prefs, dcfg, drun)
                res["dpo"] = {k: v for k, v in dres.items() if k != "history"}
                res["dpo"]["first_loss"] = dres["history"][0]["loss"]
                _save_model(lm.model, lm.tokenizer, rd / "model")
            else:  # nothing to learn from: the policy carries over unchanged
                log.warning("round %d: no preference pairs; the policy is unchanged", r)
                _save_model(lm.model, lm.tokenizer, rd / "model")
            atomic_write_json(rd / "results.json", res)
            run.log(step=r, **{k: v for k, v in res.items() if not isinstance(v, (dict, str))},
                    **({f"dpo_{k}": v for k, v in res["dpo"].items()} if "dpo" in res else {}))
            rounds.append(res)
            policy_dir = rd / "model"
            del lm
        results: dict[str, Any] = {"rounds": rounds, "final_model": str(policy_dir),
                                   "generated_tokens": sum(x["generated_tokens"] for x in rounds)}
        if cfg.eval_data:
            from reasonlab.evals.skillmath_eval import evaluate_sets, pooled_accuracy, read_eval_sets

            sets = read_eval_sets(cfg.eval_data)
            for name, mdir in (("sft", sft_dir), ("mcts_dpo", policy_dir)):
                ev = evaluate_sets(mdir, sets, out / "eval" / name, names=cfg.eval_sets,
                                   limit=cfg.eval_limit, max_new_tokens=cfg.eval_max_new_tokens,
                                   batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                   device=cfg.device, progress=progress)
                results[f"{name}_accuracy"] = pooled_accuracy(ev)
                results[f"{name}_by_set"] = {s: e["overall"]["accuracy"] for s, e in ev.items()}
        results["complete"] = True
    run.save_results(results)
    return results

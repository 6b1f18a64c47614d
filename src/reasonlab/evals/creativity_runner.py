"""Runner: train tiny Llama models on synthetic creators conditionally and marginally, then
measure their statistical creativity E0 as the number of training creators ``n`` grows.

The paper's training guideline (arXiv:2401.01623 §5): minimize the conditional NLL over
(creator information, work) pairs — keep the condition, and many distinct creators matter. For
each ``n`` in ``ns`` the first ``n`` creators of one seeded draw from ``D_C`` share a fixed budget
of ``total_works`` training works (so ``n`` varies the number of distinct creators, not the data
size). Two models are trained with the project's Llama stack (``LlamaForCausalLM`` narrowed from
the tiny herd, :class:`~reasonlab.llama.trainer.Trainer`, loss on the work only):

* ``conditional``: the prompt is the biography ``I[c]``;
* ``marginal``: the prompt is empty — the model learns ``p(x)``, as when the condition is dropped.

Each model is scored (:func:`reasonlab.evals.creativity.score_creators`) on fresh works of its
training creators ("held-out works") and on ``unseen_creators`` new creators from ``D_C``. The run
directory holds one sub-run per (n, mode) (resumable; finished ones are skipped), results.json
and ``e0_vs_n.png``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.evals.creativity import EVALUATORS, e0_by_evaluator, score_creators
from reasonlab.evals.creators import Creator, condition_prompt, sample_creators
from reasonlab.runs import Run, atomic_write_json, read_json

log = logging.getLogger(__name__)
MODES = ("conditional", "marginal")


@dataclass
class CreativityConfig:
    """The creativity experiment (defaults: a 45k-parameter model, 1200 steps per (n, mode): at
    300 the conditional model has not yet learned to use the biography)."""

    ns: list[int] = field(default_factory=lambda: [2, 4, 8, 16, 32])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    total_works: int = 2048  # training works, split evenly over the n creators
    unseen_creators: int = 16
    eval_works: int = 64  # fresh works per creator for the KL evaluator
    sample_creators: int = 4  # creators per group also scored by the sample-based evaluators
    samples: int = 100  # works per side for the discriminator and MAUVE
    evaluators: list[str] = field(default_factory=lambda: list(EVALUATORS))
    eta: float = 0.05
    kl_range: float = 1.0  # declared range of κ_KL (nats/char) for the bound
    alpha: float = 3.0  # Dirichlet concentration of a creator's word weights
    favorite_boost: float = 4.0
    # the model: the tiny herd's Llama 3 config, narrowed; one character per token
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    works_per_row: int = 3
    seq_len: int = 448  # the longest row allowed
    batch_size: int = 8  # rows per step
    max_steps: int = 1200
    lr: float = 3e-3
    warmup_steps: int = 30
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ns:
            raise ConfigError("config key 'ns' must list at least one number of creators")
        for i, n in enumerate(self.ns):
            check_range(f"ns[{i}]", n, 1, 4096)
            if self.total_works // n < 1:
                raise ConfigError(f"config key 'ns[{i}]' = {n} exceeds config key 'total_works' = "
                                  f"{self.total_works} (each creator needs a work)")
        if not self.modes:
            raise ConfigError("config key 'modes' must list at least one of " + ", ".join(MODES))
        for i, m in enumerate(self.modes):
            check_choice(f"modes[{i}]", m, MODES)
        for i, e in enumerate(self.evaluators):
            check_choice(f"evaluators[{i}]", e, EVALUATORS)
        check_range("total_works", self.total_works, 1)
        check_range("unseen_creators", self.unseen_creators, 1, 4096)
        check_range("eval_works", self.eval_works, 1)
        check_range("sample_creators", self.sample_creators, 0)
        check_range("samples", self.samples, 10)
        check_range("eta", self.eta, 0.0, 1.0, lo_open=True)
        if self.eta >= 1.0:
            raise ConfigError(f"config key 'eta' = {self.eta!r} is out of range (0.0, 1.0)")
        check_range("kl_range", self.kl_range, 0.0, lo_open=True)
        check_range("alpha", self.alpha, 0.0, lo_open=True)
        check_range("favorite_boost", self.favorite_boost, 1.0)
        check_range("dim", self.dim, 8, 4096)
        check_range("n_layers", self.n_layers, 1, 64)
        check_range("n_heads", self.n_heads, 1, 64)
        check_range("n_kv_heads", self.n_kv_heads, 1, 64)
        check_order("n_kv_heads", self.n_kv_heads, "n_heads", self.n_heads)
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(f"config key 'dim' = {self.dim}, config key 'n_heads' = "
                              f"{self.n_heads} and config key 'n_kv_heads' = {self.n_kv_heads}: "
                              "dim must divide by n_heads and n_heads by n_kv_heads")
        check_range("works_per_row", self.works_per_row, 1, 64)
        check_range("seq_len", self.seq_len, 16, 4096)
        check_range("batch_size", self.batch_size, 1)
        check_range("max_steps", self.max_steps, 1)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("warmup_steps", self.warmup_steps, 0)
        check_order("warmup_steps", self.warmup_steps, "max_steps", self.max_steps)
        check_range("threads", self.threads, 0, 256)


# -- data and model ------------------------------------------------------------------------------
def creator_sets(cfg: CreativityConfig) -> tuple[list[Creator], list[Creator]]:
    """The training pool (the first n are the training creators at n) and the unseen creators."""
    kw = {"alpha": cfg.alpha, "favorite_boost": cfg.favorite_boost}
    pool = sample_creators(max(cfg.ns), cfg.seed, prefix="c", **kw)
    unseen = sample_creators(cfg.unseen_creators, cfg.seed + 100_003, prefix="u", **kw)
    return pool, unseen


def training_pairs(creators: list[Creator], total_works: int, mode: str, seed: int
                   ) -> list[tuple[str, str]]:
    """(prompt, work) pairs: ``total_works // n`` works per creator; the prompt is ``I[c]`` when
    conditional and empty when marginal."""
    rng = random.Random(seed)
    per = total_works // len(creators)
    pairs = []
    for c in creators:
        prompt = condition_prompt(c) if mode == "conditional" else ""
        pairs += [(prompt, c.sample(rng)) for _ in range(per)]
    rng.shuffle(pairs)
    return pairs


def char_tokenizer(out_dir: Path | None = None):
    """The project's byte-level tokenizer with no merges: one ASCII character per token."""
    from reasonlab.llama.tokenizer import LLAMA3_SPECIAL_TOKENS, train_tokenizer

    texts = [" ".join(["x"] * 4)]  # no pair repeats twice: nothing is merged
    return train_tokenizer(texts, vocab_size=256 + len(LLAMA3_SPECIAL_TOKENS), n_reserved=0,
                           out_dir=out_dir)


def build_model(cfg: CreativityConfig, tokenizer):
    """A fresh ``LlamaForCausalLM``: the tiny herd's Llama 3 config narrowed to ``dim``."""
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import ffn_hidden_dim, preset
    from reasonlab.runs import seed_everything

    config = preset("tiny-0.5m", vocab_size=len(tokenizer), max_position_embeddings=cfg.seq_len,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    config.hidden_size = cfg.dim
    config.intermediate_size = ffn_hidden_dim(cfg.dim, 1.3, 16)
    config.num_hidden_layers = cfg.n_layers
    config.num_attention_heads = cfg.n_heads
    config.num_key_value_heads = cfg.n_kv_heads
    config.head_dim = cfg.dim // cfg.n_heads
    seed_everything(cfg.seed)
    return LlamaForCausalLM(config)


def pack_works(docs, per_row: int, max_len: int, pad_id: int):
    """Rows of exactly ``per_row`` documents each (attention masked per document), right-padded
    to the longest row: every optimizer step sees the same number of works whether or not a
    biography precedes them. (Packing by tokens would give the marginal model, whose documents
    are shorter, more works per step.)"""
    import torch

    from reasonlab.llama.packing import PackedSequences

    rows = [docs[i:i + per_row] for i in range(0, len(docs), per_row)]
    width = max(sum(len(d.ids) for d in row) for row in rows)
    if width > max_len:
        raise ValueError(f"a row of {per_row} works has {width} tokens, more than seq_len={max_len}")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    doc_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    target = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, row in enumerate(rows):
        pos = 0
        for j, d in enumerate(row):
            n = len(d.ids)
            ids[r, pos:pos + n] = torch.tensor(d.ids)
            doc_ids[r, pos:pos + n] = j
            target[r, pos:pos + n] = torch.tensor(d.target_mask)
            pos += n
    return PackedSequences(ids, doc_ids, target)


def train_model(cfg: CreativityConfig, tokenizer, pairs: list[tuple[str, str]], out: Path):
    """Train on (prompt, work) pairs, ``works_per_row`` to a row, loss on the work and its end;
    resumes from checkpoints. Both modes see the same works in the same order."""
    from reasonlab.llama.sft import pair_document
    from reasonlab.llama.trainer import TrainConfig, Trainer

    tcfg = TrainConfig(seq_len=cfg.seq_len, batch_size=cfg.batch_size, max_steps=cfg.max_steps,
                       lr=cfg.lr, warmup_steps=cfg.warmup_steps, eval_every=cfg.max_steps,
                       checkpoint_every=max(1, cfg.max_steps // 2), keep_checkpoints=1,
                       log_every=50, device="cpu", distributed="none", seed=cfg.seed)
    run = Run(out, tcfg, cfg.seed, name="creativity-train")
    docs = [pair_document(tokenizer, p, w) for p, w in pairs]
    data = pack_works(docs, cfg.works_per_row, cfg.seq_len, tokenizer.pad_token_id)
    model = build_model(cfg, tokenizer)
    trainer = Trainer(tcfg, model, data, None, run)
    fit = trainer.fit()
    model.eval()
    return model, {"train_loss": fit.get("loss"), "steps": fit["steps"],
                   "n_params": sum(p.numel() for p in model.parameters()),
                   "n_train_sequences": len(data)}


# -- one (n, mode) ----------------------------------------------------------------------------------
def _scores_dict(scores) -> list[dict]:
    return [dict(s.__dict__) for s in scores]


def evaluate_one(cfg: CreativityConfig, model, tokenizer, train_creators: list[Creator],
                 unseen: list[Creator], mode: str, cache: dict) -> dict[str, Any]:
    """κ per creator and E0 per evaluator on held-out works of the training creators and on the
    unseen creators; the sample-based evaluators on the first ``sample_creators`` of each."""
    from reasonlab.lm.local import LocalLM

    lm = LocalLM(model, tokenizer, device="cpu", batch_size=128)
    prompt_of = condition_prompt if mode == "conditional" else (lambda c: "")
    sampled = [e for e in cfg.evaluators if e != "kl"]
    out: dict[str, Any] = {}
    for group, creators, seed in (("heldout", train_creators, cfg.seed * 2 + 1),
                                  ("unseen", unseen, cfg.seed * 2 + 2)):
        k = min(cfg.sample_creators, len(creators)) if sampled else 0
        common = dict(works=cfg.eval_works, samples=cfg.samples, seed=seed,
                      end=tokenizer.eos_token, max_new_tokens=cfg.seq_len // 2,
                      creator_embeddings=cache)
        scores = score_creators(lm, creators[:k], prompt_of, evaluators=cfg.evaluators, **common)
        if "kl" in cfg.evaluators and len(creators) > k:
            scores += score_creators(lm, creators[k:], prompt_of, evaluators=("kl",), **common)
        e0 = e0_by_evaluator(scores, eta=cfg.eta, kl_range=cfg.kl_range)
        sub = e0_by_evaluator(scores[:k], eta=cfg.eta, kl_range=cfg.kl_range) if k else {}
        out[group] = {"e0": {k_: v.to_dict() for k_, v in e0.items()},
                      "e0_sampled_subset": {k_: v.e0 for k_, v in sub.items()},
                      "per_creator": _scores_dict(scores)}
    return out


def run_one(cfg: CreativityConfig, n: int, mode: str, pool: list[Creator], unseen: list[Creator],
            tokenizer, out: Path, cache: dict) -> dict[str, Any]:
    done = out / "results.json"
    if done.exists():
        return read_json(done)
    t0 = time.time()
    train_creators = pool[:n]
    pairs = training_pairs(train_creators, cfg.total_works, mode, cfg.seed * 1009 + n)
    model, info = train_model(cfg, tokenizer, pairs, out)
    t1 = time.time()
    res = {"n": n, "mode": mode, **info, "train_s": t1 - t0,
           **evaluate_one(cfg, model, tokenizer, train_creators, unseen, mode, cache)}
    res["eval_s"] = time.time() - t1
    atomic_write_json(done, res)
    return res


# -- the experiment -----------------------------------------------------------------------------
def summary_rows(results: list[dict]) -> list[dict]:
    """One row per (n, mode): E0 (each evaluator) on held-out works and on unseen creators."""
    rows = []
    for r in results:
        row = {"n": r["n"], "mode": r["mode"]}
        for group in ("heldout", "unseen"):
            for ev, est in r[group]["e0"].items():
                row[f"{group}_{ev}"] = est["e0"]
                row[f"{group}_{ev}_upper"] = est["upper"]
        rows.append(row)
    return rows


def plot_e0(results: list[dict], path: Path, evaluator: str = "kl") -> Path | None:
    """E0 and its upper bound against n, per mode, for held-out works and unseen creators."""
    from reasonlab.plots import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    drawn = False
    for ax, group in zip(axes, ("heldout", "unseen")):
        for mode, color in zip(MODES, ("tab:blue", "tab:orange")):
            pts = sorted((r["n"], r[group]["e0"][evaluator]) for r in results
                         if r["mode"] == mode and evaluator in r[group]["e0"])
            if not pts:
                continue
            ns = [p[0] for p in pts]
            ax.plot(ns, [p[1]["e0"] for p in pts], "o-", color=color, label=f"{mode} E0")
            ax.plot(ns, [p[1]["upper"] for p in pts], "--", color=color, label=f"{mode} bound")
            drawn = True
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training creators n")
        ax.set_title("held-out works" if group == "heldout" else "unseen creators")
    axes[0].set_ylabel(f"E0 ({evaluator})")
    axes[0].legend(fontsize=8)
    if not drawn:
        plt.close(fig)
        return None
    return save_figure(fig, path, dpi=100)


def run_creativity(cfg: CreativityConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train and evaluate every (n, mode); write results.json and e0_vs_n.png into ``out_dir``."""
    import torch

    from reasonlab.device import torch_threads

    out = Path(out_dir)
    run = Run(out, cfg, cfg.seed, name="creativity")
    pool, unseen = creator_sets(cfg)
    atomic_write_json(out / "creators.json", {"train_pool": [c.to_dict() for c in pool],
                                              "unseen": [c.to_dict() for c in unseen]})
    tokenizer = char_tokenizer()
    cache: dict = {}
    results = []
    t0 = time.time()
    with torch_threads(cfg.threads):
        for n in cfg.ns:
            for mode in cfg.modes:
                r = run_one(cfg, n, mode, pool, unseen, tokenizer, out / f"n{n}_{mode}", cache)
                results.append(r)
                kl = r["heldout"]["e0"].get("kl", {}).get("e0")
                run.log(step=None, n=n, mode=mode, heldout_kl=kl,
                        unseen_kl=r["unseen"]["e0"].get("kl", {}).get("e0"))
                log.info("n=%d %s: E0_kl held-out %s, unseen %s", n, mode, kl,
                         r["unseen"]["e0"].get("kl", {}).get("e0"))
    summary = {"rows": summary_rows(results), "results": results, "threads": cfg.threads,
               "torch_threads": torch.get_num_threads(), "wall_s": time.time() - t0,
               "n_params": results[0]["n_params"] if results else None}
    plot_e0(results, out / "e0_vs_n.png")
    run.save_results(summary)
    return summary

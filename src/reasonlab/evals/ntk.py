"""NTKEval: how learning one skill moves the others (Guo et al., "Learning Beyond Pattern
Matching? Assaying Mathematical Understanding in LLMs", arXiv:2405.15485, section 3).

The kernel over skills (conditions: a skill, or a skill in one wording) is

    k(s, s') = E_{(x, y*) in D_{s'}} [ m_{theta_s}(x, y*) - m_{theta_0}(x, y*) ]

where ``theta_0`` is the base model with a zero-shot ``Q: ...\\nA: `` prompt and ``theta_s`` is the
model after learning skill ``s``: in context (``n_shots`` skill-s exemplars before the question)
or by fine-tuning (``ft_steps`` optimizer steps on skill-s data, all weights or a PEFT LoRA
adapter; the base weights are put back bit for bit before the next skill). ``m`` is measured
several ways on the same skill-s' items (:data:`MEASURES`):

* ``logprob``: the teacher-forced sequence log-probability of the reference solution;
* ``token_prob``: its length-normalized form ``exp(mean per-token log p)`` (the primary measure:
  the paper's probability of the reference, comparable across solution lengths);
* ``seq_prob``: ``p(solution | x)`` itself (tiny for long solutions);
* ``answer_prob``: ``p(reference answer | x, the model's own sampled reasoning)``, averaged over
  the ``k`` samples (the reasoning is the sample cut before its ``The answer is`` line);
* ``accuracy``: the fraction of the ``k`` sampled answers that verify (``data.answers``).

Every cell has a paired bootstrap interval over items; contrasts (diagonal minus off-diagonal,
same skill in another wording minus another skill in the same wording) are bootstrapped by
resampling each column's items once for the whole matrix. :func:`samples_needed` asks how many
test items an estimator needs before the sign of a learning effect is right with 95% confidence
(by resampling): the paper's practical claim is that the probability kernel needs far fewer
items than the accuracy difference.

No public code accompanies the paper; the teacher-forced scoring is the project's
``LocalLM.score`` (itself tested against a plain forward pass), LoRA is HF PEFT's.

Layout: config (:class:`NTKConfig`), pure core (``cell_stats``, ``contrast``,
``samples_needed``, ``measure``, ``finetune``, ``learned``), runner (:func:`run_ntkeval`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.data.problem import Problem

log = logging.getLogger(__name__)

MEASURES = ("logprob", "token_prob", "seq_prob", "answer_prob", "accuracy")
SAMPLED = ("answer_prob", "accuracy")  # measures that need sampling (k > 0)
METHODS = ("icl", "ft")
ANSWER_LINE = "The answer is "
STOPS = ["\nQ:", "\n\n"]


# --------------------------------------------------------------------------- config


@dataclass
class NTKConfig:
    """What to learn, how, and how to measure it."""

    model: str = "herd-m"  # a model folder or a model cache recipe name (NAME or NAME:micro)
    dataset: str = "skillmath"  # skillmath (skills x wordings) or math (skills = subjects)
    skills: list[str] = field(default_factory=lambda: ["add", "sub", "mul", "cmp"])
    wordings: list[int] = field(default_factory=lambda: [0, 1])  # SkillMath templates
    n_eval: int = 24  # test items per condition
    n_train: int = 32  # skill data per condition (fine-tuning data; exemplars come from it)
    methods: list[str] = field(default_factory=lambda: ["icl", "ft"])
    n_shots: int = 1  # in-context exemplars
    ft_mode: str = "full"  # full | lora
    ft_steps: int = 5
    ft_lr: float = 3e-4
    ft_batch: int = 8
    ft_optimizer: str = "adamw"  # adamw | sgd
    lora_r: int = 4
    lora_alpha: int = 8
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    k: int = 4  # samples per item for answer_prob and accuracy; 0 = teacher-forced only
    sample_cells: str = "all"  # all | diagonal (a learned model samples only on its own skill)
    temperature: float = 1.0
    max_new_tokens: int = 160
    batch_size: int = 32
    bootstrap: int = 1000
    # SkillMath problems: one skill each, the herd's number ranges and solution style
    max_number: int = 30
    max_factor: int = 9
    max_answer: int = 300
    solution_style: str = "columns_all"
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, ["skillmath", "math"])
        if not self.skills:
            raise ConfigError("config key 'skills' is empty; name at least one skill")
        if len(set(self.skills)) != len(self.skills):
            raise ConfigError(f"config key 'skills' = {self.skills} repeats a skill")
        if self.dataset == "skillmath":
            from reasonlab.data.skillmath import N_TEMPLATES, SOLUTION_STYLES, skill_names

            for s in self.skills:
                check_choice("skills", s, skill_names())
            for w in self.wordings:
                check_choice("wordings", w, list(range(N_TEMPLATES)))
            check_choice("solution_style", self.solution_style, list(SOLUTION_STYLES))
        if not self.wordings or len(set(self.wordings)) != len(self.wordings):
            raise ConfigError(f"config key 'wordings' = {self.wordings} must be distinct "
                              "templates, at least one")
        if self.dataset == "math" and len(self.wordings) != 1:
            raise ConfigError("config key 'wordings' must hold one entry for dataset 'math' "
                              "(wording variants exist only in SkillMath)")
        if not self.methods:
            raise ConfigError("config key 'methods' is empty; allowed: ['icl', 'ft']")
        for m in self.methods:
            check_choice("methods", m, list(METHODS))
        check_range("n_eval", self.n_eval, 1, 100_000)
        check_range("n_train", self.n_train, 1, 100_000)
        check_range("n_shots", self.n_shots, 1, 64)
        check_order("n_shots", self.n_shots, "n_train", self.n_train)
        check_choice("ft_mode", self.ft_mode, ["full", "lora"])
        check_range("ft_steps", self.ft_steps, 0, 100_000)
        check_range("ft_lr", self.ft_lr, 0.0, 10.0)
        check_range("ft_batch", self.ft_batch, 1, 100_000)
        check_choice("ft_optimizer", self.ft_optimizer, ["adamw", "sgd"])
        check_range("lora_r", self.lora_r, 1, 4096)
        check_range("lora_alpha", self.lora_alpha, 1, 1 << 16)
        if not self.lora_targets:
            raise ConfigError("config key 'lora_targets' is empty; name modules like q_proj")
        check_range("k", self.k, 0, 1024)
        check_choice("sample_cells", self.sample_cells, ["all", "diagonal"])
        check_range("temperature", self.temperature, 0.0, 10.0, lo_open=True)
        check_range("max_new_tokens", self.max_new_tokens, 1, 1 << 16)
        check_range("batch_size", self.batch_size, 1, 1 << 16)
        check_range("bootstrap", self.bootstrap, 0, 1_000_000)
        check_range("max_number", self.max_number, 1, 10**6)
        check_range("max_factor", self.max_factor, 2, 1000)
        check_range("max_answer", self.max_answer, 10, 10**9)
        check_order("max_number", self.max_number, "max_answer", self.max_answer)
        check_range("threads", self.threads, 0, 1024)

    @property
    def measures(self) -> list[str]:
        return [m for m in MEASURES if self.k > 0 or m not in SAMPLED]


# --------------------------------------------------------------------------- statistics


def cell_stats(deltas: Sequence[float], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of paired per-item differences and its 95% percentile bootstrap interval."""
    from reasonlab.evals.accuracy import bootstrap_interval

    d = [float(x) for x in deltas]
    return {"value": sum(d) / len(d) if d else 0.0,
            "ci95": list(bootstrap_interval(d, n_boot, seed)), "n": len(d)}


def contrast(deltas: np.ndarray, weights: np.ndarray, n_boot: int = 1000, seed: int = 0
             ) -> tuple[float, np.ndarray]:
    """``sum(weights * cell means)`` of a kernel and its bootstrap replicates.

    ``deltas`` is ``[rows, cols, items]``: per-item differences, the items of column ``c`` being
    the same for every row (each learned model is measured on the same test set). A replicate
    resamples each column's items once and uses that draw in every row, keeping the pairing."""
    deltas = np.asarray(deltas, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    value = float((weights * deltas.mean(-1)).sum())
    if n_boot <= 0:
        return value, np.full(1, value)
    rows, cols, n = deltas.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, cols, n))
    # means[b, r, c] = mean_i deltas[r, c, idx[b, c, i]]
    picked = np.take_along_axis(deltas[None], idx[:, None, :, :].repeat(rows, 1), axis=-1)
    reps = (picked.mean(-1) * weights[None]).sum((1, 2))
    return value, reps


def interval(replicates: np.ndarray) -> list[float]:
    """The 2.5% and 97.5% percentiles of bootstrap replicates."""
    return [float(np.percentile(replicates, 2.5)), float(np.percentile(replicates, 97.5))]


def diag_weights(n: int) -> np.ndarray:
    """Weights of ``mean(diagonal) - mean(off-diagonal)`` on an ``n x n`` kernel."""
    if n < 2:
        raise ValueError("diagonal minus off-diagonal needs at least two conditions")
    eye = np.eye(n)
    return eye / n - (1 - eye) / (n * (n - 1))


def structure_weights(conditions: Sequence[tuple[str, int]]) -> np.ndarray:
    """Weights of ``mean k(same skill, other wording) - mean k(other skill, same wording)``."""
    same_skill = np.array([[a[0] == b[0] and a[1] != b[1] for b in conditions] for a in conditions])
    same_word = np.array([[a[0] != b[0] and a[1] == b[1] for b in conditions] for a in conditions])
    if not same_skill.any() or not same_word.any():
        raise ValueError("structure vs format needs two skills and two wordings")
    return same_skill / same_skill.sum() - same_word / same_word.sum()


def samples_needed(effects: Sequence[float], *, truth_sign: float, n_boot: int = 2000,
                   seed: int = 0, confidence: float = 0.95, grid: Sequence[int] | None = None
                   ) -> int | None:
    """The fewest items whose mean has the sign ``truth_sign`` in at least ``confidence`` of
    resamples (``n`` items drawn with replacement from ``effects``); None if no ``n`` up to
    ``len(effects)`` does (a zero mean never has the right sign)."""
    x = np.asarray(effects, dtype=np.float64)
    if truth_sign == 0 or len(x) == 0:
        return None
    rng = np.random.default_rng(seed)
    for n in grid or range(1, len(x) + 1):
        means = x[rng.integers(0, len(x), size=(n_boot, n))].mean(-1)
        if float(np.mean(np.sign(means) == np.sign(truth_sign))) >= confidence:
            return int(n)
    return None


# --------------------------------------------------------------------------- data


@dataclass
class Condition:
    """One kernel row/column: a skill in one wording, its test items and its skill data."""

    skill: str
    wording: int
    eval: list[Problem]
    train: list[Problem]

    @property
    def name(self) -> str:
        return f"{self.skill}/t{self.wording}"


def skillmath_conditions(cfg: NTKConfig, seed: int) -> list[Condition]:
    """Skills x wordings: one-skill SkillMath problems, the same problems (numbers, solution) in
    every wording (:func:`reasonlab.data.skillmath.render`), test and skill data disjoint."""
    from reasonlab.data.skillmath import SkillMathConfig, render, sample_problems

    sm = SkillMathConfig(seed=seed, skills=list(cfg.skills), templates=list(cfg.wordings),
                         heldout_template=-1, heldout_pairs=[], max_number=cfg.max_number,
                         max_factor=cfg.max_factor, max_answer=cfg.max_answer,
                         solution_style=cfg.solution_style)
    out = []
    for s in cfg.skills:
        base_eval = sample_problems(sm, cfg.n_eval, seed=f"ntk:{seed}:{s}:eval", k=1, skills=[s],
                                    templates=[cfg.wordings[0]], prefix=f"ntk-{s}-eval")
        seen = {render(p, template=w).question for p in base_eval for w in cfg.wordings}
        base_train = sample_problems(sm, cfg.n_train, seed=f"ntk:{seed}:{s}:train", k=1,
                                     skills=[s], templates=[cfg.wordings[0]],
                                     prefix=f"ntk-{s}-train", exclude_questions=seen)
        for w in cfg.wordings:
            out.append(Condition(s, w, [render(p, template=w) for p in base_eval],
                                 [render(p, template=w) for p in base_train]))
    return out


def labelled_conditions(problems: Sequence[Problem], skills: Sequence[str], n_eval: int,
                        n_train: int, seed: int) -> list[Condition]:
    """Conditions from a labelled set (MATH: the subject is the skill): per skill a seeded
    shuffle, the first ``n_eval`` to test and the next ``n_train`` to learn from."""
    import random

    out = []
    for s in skills:
        pool = [p for p in problems if s in (p.skills or []) or p.subject == s]
        random.Random(f"ntk:{seed}:{s}").shuffle(pool)
        if len(pool) < n_eval + n_train:
            raise ValueError(f"skill {s!r} has {len(pool)} problems; n_eval + n_train = "
                             f"{n_eval + n_train} are needed")
        out.append(Condition(s, 0, pool[:n_eval], pool[n_eval:n_eval + n_train]))
    return out


def qa_prompt(question: str, exemplars: Sequence[Problem] = ()) -> str:
    """``Q: ...\\nA: `` with solved exemplars (one blank line apart) before it."""
    from reasonlab.data.skillmath import format_prompt

    shots = "".join(format_prompt(e.question) + e.solution + "\n\n" for e in exemplars)
    return shots + format_prompt(question)


# --------------------------------------------------------------------------- measuring


def reasoning_of(completion: str) -> str:
    """A sample's reasoning: its text before ``The answer is`` (all of it when absent), ending in
    a newline unless empty, so ``reasoning + "The answer is "`` reads like a solution."""
    text = completion.split(STOPS[0], 1)[0]
    i = text.find(ANSWER_LINE)
    text = (text[:i] if i >= 0 else text).rstrip(" ")
    return text if not text or text.endswith("\n") else text + "\n"


def measure(lm, items: Sequence[Problem], prompts: Sequence[str], *, k: int,
            temperature: float = 1.0, max_new_tokens: int = 160, seed: int = 0,
            batch_size: int | None = None) -> dict[str, list[float]]:
    """Per-item measures (:data:`MEASURES`) of ``lm`` on ``items`` asked with ``prompts``.

    Teacher-forced: the reference solution's log p (sum), exp(mean per-token log p) and exp(sum).
    With ``k > 0``: ``k`` samples per item (seeded, so two models are compared on the same noise)
    give the fraction that verify and the mean p(reference answer | prompt + own reasoning)."""
    from reasonlab.evals.accuracy import is_correct

    scored = lm.score(list(prompts), [p.solution for p in items], batch_size=batch_size)
    out: dict[str, list[float]] = {
        "logprob": [s.total for s in scored],
        "token_prob": [math.exp(s.total / max(s.num_tokens, 1)) for s in scored],
        "seq_prob": [math.exp(s.total) for s in scored],
    }
    if k <= 0:
        return out
    rows = [pr for pr in prompts for _ in range(k)]
    gens = lm.generate(rows, max_new_tokens=max_new_tokens, temperature=temperature, stop=STOPS,
                       seed=seed, batch_size=batch_size)
    texts = [g.text for g in gens]
    ans_prompts = [row + reasoning_of(t) + ANSWER_LINE for row, t in zip(rows, texts)]
    refs = [p.answer for p in items for _ in range(k)]
    ans = lm.score(ans_prompts, refs, batch_size=batch_size)
    out["answer_prob"] = [float(np.mean([math.exp(a.total) for a in ans[i * k:(i + 1) * k]]))
                          for i in range(len(items))]
    out["accuracy"] = [float(np.mean([is_correct(t, p.answer) for t in texts[i * k:(i + 1) * k]]))
                       for i, p in enumerate(items)]
    return out


def _pad_batch(lm, pairs: Sequence[tuple[str, str]]):
    """Right-padded ``input_ids``, ``attention_mask`` and the mask of completion tokens."""
    import torch

    rows = []
    for prompt, completion in pairs:
        p = lm.encode(prompt)
        c = lm.encode(completion, add_special_tokens=False)
        rows.append((p + c, len(p)))
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), lm.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, n_prompt) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        attn[i, :len(r)] = 1
        labels[i, n_prompt:len(r)] = True
    return ids.to(lm.device), attn.to(lm.device), labels.to(lm.device)


def finetune(lm, pairs: Sequence[tuple[str, str]], *, steps: int, lr: float, batch: int,
             optimizer: str = "adamw", seed: int = 0) -> list[float]:
    """``steps`` optimizer steps on the mean per-token NLL of the completions of ``pairs``
    (batch ``b`` holds pairs ``b*batch ...`` cycling through the data) on every trainable
    parameter of ``lm.model``. Returns the loss of each step (before its update)."""
    import torch

    from reasonlab.lm.logprobs import sequence_logprobs

    params = [p for p in lm.model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    torch.manual_seed(seed)
    losses = []
    was_training = lm.model.training
    lm.model.train()
    try:
        for step in range(steps):
            start = (step * batch) % len(pairs)
            chunk = [pairs[(start + j) % len(pairs)] for j in range(min(batch, len(pairs)))]
            ids, attn, labels = _pad_batch(lm, chunk)
            loss = -sequence_logprobs(lm.model, ids, attn, labels, average=True).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        lm.model.train(was_training)
        opt.zero_grad(set_to_none=True)
    return losses


def snapshot(model) -> dict[str, Any]:
    """Copies of every tensor of ``model``'s state and each parameter's ``requires_grad``."""
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grad": {n: p.requires_grad for n, p in model.named_parameters()}}


def restore(model, snap: dict[str, Any]) -> None:
    """Put ``model`` back exactly as :func:`snapshot` saw it (values copied in place)."""
    import torch

    with torch.no_grad():
        model.load_state_dict(snap["state"], strict=True)
    for n, p in model.named_parameters():
        p.requires_grad_(snap["grad"][n])


@contextlib.contextmanager
def learned(lm, pairs: Sequence[tuple[str, str]], *, mode: str = "full", steps: int = 5,
            lr: float = 3e-4, batch: int = 8, optimizer: str = "adamw", lora_r: int = 4,
            lora_alpha: int = 8, lora_targets: Sequence[str] = ("q_proj", "v_proj"),
            seed: int = 0) -> Iterator[list[float]]:
    """``lm`` fine-tuned on ``pairs`` inside the block (all weights or a LoRA adapter); on exit
    the base weights are restored bit for bit. Yields the training losses."""
    snap = snapshot(lm.model)
    peft_model = None
    try:
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            peft_model = get_peft_model(lm.model, LoraConfig(
                r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0,
                target_modules=list(lora_targets)))
        yield finetune(lm, pairs, steps=steps, lr=lr, batch=batch, optimizer=optimizer, seed=seed)
    finally:
        if peft_model is not None:
            lm.model = peft_model.unload()  # the base modules back in place, the adapter dropped
        restore(lm.model, snap)


def kernel_from_measures(base: dict[str, list[float]], learned_rows: Sequence[dict[str, list[float]]],
                         measure_name: str) -> np.ndarray:
    """Per-item differences ``[rows, cols, items]`` of one measure: ``learned_rows[r][c]`` holds
    row ``r``'s per-item values on column ``c``, ``base[c]`` the base model's."""
    cols = list(base)
    nan = [math.nan] * len(base[cols[0]][measure_name])
    return np.array([[np.asarray(row[c].get(measure_name, nan)) - np.asarray(base[c][measure_name])
                      for c in cols] for row in learned_rows])


# --------------------------------------------------------------------------- runner


def _measure_condition(lm, cfg: NTKConfig, cond: Condition, col: int, seed: int,
                       exemplars: Sequence[Problem] = (), sample: bool = True
                       ) -> dict[str, list[float]]:
    prompts = [qa_prompt(p.question, exemplars) for p in cond.eval]
    return measure(lm, cond.eval, prompts, k=cfg.k if sample else 0, temperature=cfg.temperature,
                   max_new_tokens=cfg.max_new_tokens, seed=seed * 1000 + col,
                   batch_size=cfg.batch_size)


def compute_kernels(lm, cfg: NTKConfig, conditions: Sequence[Condition], *, seed: int = 0,
                    done: dict[str, Any] | None = None, on_row=None, progress: bool = True
                    ) -> dict[str, Any]:
    """Measure the base model and every learned model on every condition.

    Returns ``{"base": {cond: measures}, "icl": [row...], "ft": [row...]}`` where a row is
    ``{cond: measures}`` of the model that learned that row's condition. ``done`` holds rows
    already measured (resume); ``on_row(key, row)`` is called after each new one."""
    from tqdm.auto import tqdm

    done = dict(done or {})
    names = [c.name for c in conditions]

    def row(key: str, fn) -> dict[str, Any]:
        if key not in done:
            done[key] = fn()
            if on_row is not None:
                on_row(key, done[key])
        return done[key]

    def measure_all(exemplars_of=None, learned_from: str | None = None) -> dict[str, Any]:
        return {c.name: _measure_condition(
            lm, cfg, c, j, seed, exemplars_of(c) if exemplars_of else (),
            sample=cfg.sample_cells == "all" or learned_from in (None, c.name))
            for j, c in enumerate(conditions)}

    jobs = 1 + len(conditions) * len(cfg.methods)
    bar = tqdm(total=jobs, desc="ntkeval", unit="model", disable=not progress)
    out: dict[str, Any] = {"conditions": names, "base": row("base", measure_all)}
    bar.update(1)
    for method in cfg.methods:
        rows = []
        for c in conditions:
            if method == "icl":
                shots = c.train[:cfg.n_shots]
                # every column's items asked after row c's exemplars
                rows.append(row(f"icl:{c.name}", lambda shots=shots, c=c: measure_all(
                    lambda _: shots, c.name)))
            else:
                def ft(c=c) -> dict[str, Any]:
                    from reasonlab.data.skillmath import sft_pairs

                    with learned(lm, sft_pairs(c.train), mode=cfg.ft_mode, steps=cfg.ft_steps,
                                 lr=cfg.ft_lr, batch=cfg.ft_batch, optimizer=cfg.ft_optimizer,
                                 lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                 lora_targets=cfg.lora_targets, seed=seed) as losses:
                        res = measure_all(learned_from=c.name)
                    res["_losses"] = losses
                    return res
                rows.append(row(f"ft:{c.name}", ft))
            bar.update(1)
        out[method] = rows
    bar.close()
    return out


def summarize_kernels(measured: dict[str, Any], cfg: NTKConfig, conditions: Sequence[Condition],
                      seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Kernels (value and 95% interval per cell), contrasts with intervals, and the bootstrap
    replicates of the contrasts (keyed ``method:measure:contrast``, for pooling over seeds)."""
    names = [c.name for c in conditions]
    conds = [(c.skill, c.wording) for c in conditions]
    base = {n: measured["base"][n] for n in names}
    kernels: dict[str, Any] = {}
    reps: dict[str, np.ndarray] = {}
    for method in cfg.methods:
        kernels[method] = {}
        for m in cfg.measures:
            d = kernel_from_measures(base, [{n: r[n] for n in names} for r in measured[method]], m)
            cells = [[cell_stats(d[i, j], cfg.bootstrap, seed) if not np.isnan(d[i, j]).any()
                      else {"value": None, "ci95": None} for j in range(len(names))]
                     for i in range(len(names))]
            entry: dict[str, Any] = {
                "value": [[c["value"] for c in r] for r in cells],
                "ci95": [[c["ci95"] for c in r] for r in cells]}
            diag = np.mean([d[i, i].mean() for i in range(len(names))])
            entry["diag_mean"] = float(diag)
            kernels[method][m] = entry
            if np.isnan(d).any():  # sampled on the diagonal only: no contrasts
                continue
            if len(set(s for s, _ in conds)) >= 2:
                skill_w = _skill_diag_weights(conds)
                v, r = contrast(d, skill_w, cfg.bootstrap, seed)
                entry["diag_minus_offdiag"] = {"value": v, "ci95": interval(r)}
                reps[f"{method}:{m}:diag_minus_offdiag"] = r
            if len(set(w for _, w in conds)) >= 2 and len(set(s for s, _ in conds)) >= 2:
                v, r = contrast(d, structure_weights(conds), cfg.bootstrap, seed)
                entry["structure_minus_format"] = {"value": v, "ci95": interval(r)}
                reps[f"{method}:{m}:structure_minus_format"] = r
            off = [d[i, j].mean() for i in range(len(names)) for j in range(len(names)) if i != j]
            entry["offdiag_mean"] = float(np.mean(off)) if off else None
    return kernels, reps


def _skill_diag_weights(conds: Sequence[tuple[str, int]]) -> np.ndarray:
    """``mean k(s, s') over s' = s (any wording)`` minus ``mean over s' != s``: the diagonal of
    the skill kernel; with one wording this is :func:`diag_weights`."""
    same = np.array([[a[0] == b[0] for b in conds] for a in conds])
    return same / same.sum() - (~same) / (~same).sum()


def learning_effects(measured: dict[str, Any], conditions: Sequence[Condition], method: str,
                     measure_name: str) -> np.ndarray:
    """Per-item diagonal differences (each condition's items after learning that condition),
    pooled over conditions: the data a learning effect is detected from."""
    names = [c.name for c in conditions]
    return np.concatenate([np.asarray(measured[method][i][n][measure_name])
                           - np.asarray(measured["base"][n][measure_name])
                           for i, n in enumerate(names)])


def plot_kernels(kernels: dict[str, Any], names: Sequence[str], path: str | Path,
                 measure_name: str = "token_prob", title: str = "") -> Path:
    """Heatmaps of the kernels of one measure side by side (rows: learned, columns: measured)."""
    from reasonlab.plots import pyplot, save_figure

    methods = [m for m in METHODS if m in kernels]
    plt = pyplot()
    n = len(names)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods) + 0.8, 0.45 * n + 2.2),
                             squeeze=False)
    for ax, method in zip(axes[0], methods):
        v = np.asarray(kernels[method][measure_name]["value"])
        lim = float(np.abs(v).max()) or 1.0
        im = ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
        ax.set_xlabel("measured on s'")
        ax.set_ylabel("learned s")
        ax.set_title({"icl": "in-context", "ft": "fine-tuned"}[method] + f" ({measure_name})",
                     fontsize=9)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{v[i, j]:.2g}", ha="center", va="center", fontsize=5)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def load_conditions(cfg: NTKConfig, seed: int) -> list[Condition]:
    if cfg.dataset == "skillmath":
        return skillmath_conditions(cfg, seed)
    from reasonlab.data.datasets import load_dataset

    return labelled_conditions(load_dataset(cfg.dataset), cfg.skills, cfg.n_eval, cfg.n_train, seed)


def measure_run(cfg: NTKConfig, out_dir: str | Path, lm=None, *, progress: bool = True
                ) -> tuple[Any, list[Condition], dict[str, Any]]:
    """Open (or resume) run directory ``out_dir`` and measure every model of the kernels into
    measures.jsonl, one line per measured model (a rerun continues after the last).
    Returns the run, the conditions and the measures (:func:`compute_kernels`)."""
    from reasonlab.device import torch_threads
    from reasonlab.runs import Run, read_jsonl, to_json

    run = Run(out_dir, cfg, cfg.seed, name="ntkeval")
    if lm is None:
        from reasonlab.lm.load import is_http_spec
        from reasonlab.lm.local import LocalLM
        from reasonlab.models.cache import resolve_model

        if is_http_spec(cfg.model):
            raise ValueError("NTKEval needs a local model (a folder or a model name), not an "
                             f"endpoint: {cfg.model}")
        lm = LocalLM.from_pretrained(resolve_model(cfg.model), device="cpu",
                                     batch_size=cfg.batch_size)
    conditions = load_conditions(cfg, cfg.seed)
    path = run.path("measures.jsonl")
    done: dict[str, Any] = {}
    if run.resumed and path.exists():
        done = {r["key"]: r["row"] for r in read_jsonl(path)}
    elif path.exists():
        path.unlink()

    def save(key: str, row: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(to_json({"key": key, "row": row}, indent=None) + "\n")
        run.log(step=None, model=key)

    with torch_threads(cfg.threads):
        measured = compute_kernels(lm, cfg, conditions, seed=cfg.seed, done=done, on_row=save,
                                   progress=progress)
    return run, conditions, measured


def run_ntkeval(cfg: NTKConfig, out_dir: str | Path, lm=None, *, progress: bool = True
                ) -> dict[str, Any]:
    """The kernels of ``cfg.model`` (or ``lm``) into run directory ``out_dir``: measures.jsonl
    (resumable, :func:`measure_run`), results.json (kernels with per-cell intervals, contrasts,
    sample efficiency) and kernels.png."""
    run, conditions, measured = measure_run(cfg, out_dir, lm, progress=progress)
    kernels, _ = summarize_kernels(measured, cfg, conditions, cfg.seed)
    names = [c.name for c in conditions]
    results: dict[str, Any] = {"model": cfg.model, "conditions": names, "seed": cfg.seed,
                               "primary_measure": "token_prob", "kernels": kernels}
    if "ft" in cfg.methods:
        results["ft_losses"] = {n: r.get("_losses") for n, r in zip(names, measured["ft"])}
    if cfg.k > 0:
        results["samples_needed"] = efficiency(measured, conditions, cfg)
    plot = plot_kernels(kernels, names, run.path("kernels.png"), "token_prob",
                        title=f"NTKEval kernels of {cfg.model}")
    results["plot"] = plot.name
    run.save_results(results)
    return results


def efficiency(measured: dict[str, Any], conditions: Sequence[Condition], cfg: NTKConfig,
               method: str | None = None) -> dict[str, Any]:
    """Items needed to get the sign of the learning effect right with 95% confidence: the
    probability kernel (``token_prob``) against the accuracy difference, on the same items; the
    sign to get right is the probability kernel's on all items."""
    method = method or ("ft" if "ft" in cfg.methods else cfg.methods[0])
    kern = learning_effects(measured, conditions, method, "token_prob")
    acc = learning_effects(measured, conditions, method, "accuracy")
    sign = float(np.sign(kern.mean()))
    return {"method": method, "n_items": int(len(kern)), "truth_sign": sign,
            "kernel": samples_needed(kern, truth_sign=sign, seed=cfg.seed),
            "accuracy": samples_needed(acc, truth_sign=sign, seed=cfg.seed),
            "kernel_mean": float(kern.mean()), "accuracy_mean": float(acc.mean())}

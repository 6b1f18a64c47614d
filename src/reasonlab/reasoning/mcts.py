"""Monte Carlo Tree Search over reasoning steps, as in MCTS-DPO (Xie et al., "Monte Carlo Tree
Search Boosts Reasoning via Iterative Preference Learning", arXiv:2405.00451 §2.1–2.2).

Compared against the public code YuxiXie/MCTS-DPO (``mcts_rl/algorithms/mcts/mcts/mcts.py``,
``search_config.py``): the same PUCT rule, length-normalized step prior, value (self-evaluation
plus outcome), backup and commit-and-reuse schedule; written here from the paper's equations.

* A **step** is the text the policy writes up to and including a newline; a step is terminal when
  the policy stops with its end token or the step states "The answer is …", or at the depth limit.
* **Expansion**: ``n_actions`` candidate steps (``root_actions`` at the first root) sampled in one
  batch from the node's prefix (``LocalLM.sample_steps`` encodes the prefix once and expands its
  KV cache over the candidates); near-duplicates (equal after normalizing case and whitespace, or
  ``difflib`` similarity ≥ ``dedup_similarity``) are dropped.
* **Selection** (PUCT): ``Q(c) + c_puct · p(c) · sqrt(N(parent)) / (1 + N(c))`` with the step prior
  ``p(c) = exp(Σ log π(step tokens) / L^λ)``.
* **Value** of a node: ``self_eval_weight · C / max(depth − 3, 1)`` plus, at a terminal node,
  ``+outcome_reward`` when the answer checker accepts the solution and ``−outcome_reward`` when it
  does not. ``C`` is the policy's own probability that the partial solution is correct
  (``self_eval_template``; the sibling candidates of one expansion are scored in one batch).
  The reward of a node is ``r = value − parent.value``; a new node starts with ``V = parent.V``
  (0 when terminal) and ``Q = r + V``.
* **Backup** (γ = 1) along the selected path, leaf first: a node with children gets
  ``V = Σ_c max(1, N_c)·Q_c / Σ_c max(1, N_c)``; then ``N += 1`` and ``Q = r + V``.
* **Commit**: after ``n_iters`` simulations (``root_iters_mult`` times as many at the first root)
  the search moves to the most visited child (ties by Q), keeping its subtree, until a terminal
  node, a node that could not be expanded, or the depth limit.
* **Pairs** (§2.3): at each depth of the committed path, chosen = the sibling with the highest Q,
  rejected = the lowest; each side extends through single-child chains; ``ε`` of the conservative
  DPO loss from the visit counts, ``conf = 1/(1 + N_rej/max(1, N_chosen))``, ``ε = min(1 − conf, 0.5)``.

Pure: the policy (:class:`StepPolicy`, met by :class:`reasonlab.lm.local.LocalLM` and by any
:class:`~reasonlab.lm.base.LanguageModel` whose ``score`` returns log-probabilities) and the
answer checker come in as objects; nothing here reads or writes files.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from reasonlab.config import check_range

STEP_STOP = "\n"
ANSWER_RE = re.compile(r"the answer is", re.IGNORECASE)
DEFAULT_SELF_EVAL = ("{prompt}{partial}\nReview: is the solution so far (A) incorrect or "
                     "(B) correct? The answer is (")


@dataclass
class MCTSConfig:
    """One search (the paper's math scripts: 64 simulations per step, ×4 at the root)."""

    n_actions: int = 4              # candidate steps per expansion
    root_actions: int = 6           # candidate steps at the first root
    n_iters: int = 8                # simulations before each commit
    root_iters_mult: int = 2        # the first root gets this many times n_iters
    c_puct: float = 1.0
    length_lambda: float = 1.25     # λ of the length-normalized step prior
    max_depth: int = 5              # steps; a node at this depth is terminal
    max_nodes: int = 200            # no expansion once the tree holds this many nodes
    temperature: float = 1.0
    max_step_tokens: int = 64
    dedup_similarity: float = 1.0   # drop a candidate this similar to a kept one (1: equal only)
    self_eval_weight: float = 1.0   # 0: outcome validation only
    outcome_reward: float = 1.0
    self_eval_template: str = DEFAULT_SELF_EVAL
    self_eval_yes: str = "B"        # the "correct" answer token(s) after the template
    self_eval_no: str = "A"
    batched: bool = True            # False: one candidate / one self-evaluation per call (cost baseline)

    def __post_init__(self) -> None:
        check_range("search.n_actions", self.n_actions, 1, 256)
        check_range("search.root_actions", self.root_actions, 1, 256)
        check_range("search.n_iters", self.n_iters, 1, 100_000)
        check_range("search.root_iters_mult", self.root_iters_mult, 1, 64)
        check_range("search.c_puct", self.c_puct, 0.0, None)
        check_range("search.length_lambda", self.length_lambda, 0.0, 10.0)
        check_range("search.max_depth", self.max_depth, 1, 1000)
        check_range("search.max_nodes", self.max_nodes, 2, 10_000_000)
        check_range("search.temperature", self.temperature, 0.0, 10.0, lo_open=True)
        check_range("search.max_step_tokens", self.max_step_tokens, 1, 1 << 16)
        check_range("search.dedup_similarity", self.dedup_similarity, 0.0, 1.0, lo_open=True)
        check_range("search.self_eval_weight", self.self_eval_weight, 0.0, None)
        check_range("search.outcome_reward", self.outcome_reward, 0.0, None)
        if "{prompt}" not in self.self_eval_template or "{partial}" not in self.self_eval_template:
            from reasonlab.config import ConfigError
            raise ConfigError("config key 'search.self_eval_template' must contain {prompt} and "
                              "{partial}")


class StepPolicy(Protocol):
    """What the search needs from a model: :meth:`generate` and :meth:`score` of
    :class:`~reasonlab.lm.base.LanguageModel`; ``sample_steps`` (shared-prefix batch) is used when
    the model has it."""

    def generate(self, prompts: Sequence[str], **kw: Any) -> list: ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list: ...


@dataclass
class Node:
    """One step in the tree. ``value`` is the node's evaluation (self-evaluation + outcome),
    ``r`` its reward, ``V`` the backed-up value of what follows, ``Q = r + V``."""

    id: int
    text: str = ""
    depth: int = 0
    parent: "Node | None" = field(default=None, repr=False)
    children: list["Node"] = field(default_factory=list, repr=False)
    prior: float = 1.0
    logprob: float = 0.0
    n_tokens: int = 0
    terminal: bool = False
    correct: bool | None = None
    self_eval: float | None = None
    value: float = 0.0
    r: float = 0.0
    V: float = 0.0
    Q: float = 0.0
    N: int = 0
    expanded: bool = False

    def path(self) -> list["Node"]:
        """Root … self."""
        out, n = [], self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]

    def partial(self) -> str:
        """The solution text so far (every step from the root's child down to this node)."""
        return "".join(n.text for n in self.path())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "depth": self.depth, "prior": self.prior,
                "logprob": self.logprob, "n_tokens": self.n_tokens, "terminal": self.terminal,
                "correct": self.correct, "self_eval": self.self_eval, "value": self.value,
                "r": self.r, "V": self.V, "Q": self.Q, "N": self.N, "expanded": self.expanded,
                "children": [c.to_dict() for c in self.children]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], parent: "Node | None" = None) -> "Node":
        kids = d.get("children", [])
        node = cls(**{k: v for k, v in d.items() if k != "children"}, parent=parent)
        node.children = [cls.from_dict(c, node) for c in kids]
        return node


def iter_nodes(root: Node):
    """Every node of the tree, depth first."""
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


# --------------------------------------------------------------------------- the rules


def step_prior(logprobs: Sequence[float], length_lambda: float = 1.25) -> float:
    """``exp(Σ log π / L^λ)``: the length-normalized probability of a step of ``L`` tokens."""
    n = len(logprobs)
    if n == 0:
        return 1.0
    return math.exp(sum(logprobs) / n ** length_lambda)


def puct_score(child: Node, parent_n: int, c_puct: float) -> float:
    """``Q + c_puct · p · sqrt(N_parent) / (1 + N)``."""
    return child.Q + c_puct * child.prior * math.sqrt(parent_n) / (1 + child.N)


def select_child(node: Node, c_puct: float) -> Node:
    """The child with the highest PUCT score (the first one on ties)."""
    return max(node.children, key=lambda c: puct_score(c, node.N, c_puct))


def node_value(self_eval: float | None, depth: int, terminal: bool, correct: bool | None,
               cfg: MCTSConfig) -> float:
    """``w·C / max(depth − 3, 1)`` plus ``±outcome_reward`` at a terminal node."""
    v = 0.0
    if self_eval is not None:
        v += cfg.self_eval_weight * self_eval / max(depth - 3, 1)
    if terminal:
        v += cfg.outcome_reward if correct else -cfg.outcome_reward
    return v


def init_child(child: Node, parent: Node) -> None:
    """A new node: ``r = value − parent.value``, ``V = parent.V`` (0 when terminal), ``Q = r + V``."""
    child.r = child.value - parent.value
    child.V = 0.0 if child.terminal else parent.V
    child.Q = child.r + child.V


def backup(path: Sequence[Node]) -> None:
    """Back up along ``path`` (root … leaf), leaf first: a node with children takes the
    visit-weighted mean of their Q as V; then ``N += 1`` and ``Q = r + V`` (γ = 1)."""
    for node in reversed(path):
        if node.children:
            w = [max(1, c.N) for c in node.children]
            node.V = sum(wi * c.Q for wi, c in zip(w, node.children)) / sum(w)
        node.N += 1
        node.Q = node.r + node.V


def best_child(node: Node) -> Node:
    """The most visited child, ties broken by Q."""
    return max(node.children, key=lambda c: (c.N, c.Q))


def normalize_step(text: str) -> str:
    return " ".join(text.lower().split())


def dedup_steps(texts: Sequence[str], similarity: float = 1.0) -> list[int]:
    """Indices of the candidates kept: the first of each group of near-duplicates (equal after
    normalizing case and whitespace, or ``difflib`` ratio ≥ ``similarity`` when it is < 1)."""
    kept: list[int] = []
    norms: list[str] = []
    for i, t in enumerate(texts):
        n = normalize_step(t)
        if not n:
            continue
        if n in norms:
            continue
        if similarity < 1.0 and any(difflib.SequenceMatcher(None, n, m).ratio() >= similarity
                                    for m in norms):
            continue
        kept.append(i)
        norms.append(n)
    return kept


def epsilon_from_visits(n_chosen: int, n_rejected: int) -> float:
    """The conservative-DPO ε of a pair: ``conf = 1/(1 + N_rej/max(1, N_ch))``, ``min(1 − conf, .5)``."""
    conf = 1.0 / (1.0 + n_rejected / max(1, n_chosen))
    return min(1.0 - conf, 0.5)


def completion_of(node: Node) -> str:
    """The node's step extended through single-child chains."""
    text, n = node.text, node
    while len(n.children) == 1:
        n = n.children[0]
        text += n.text
    return text


def extract_pairs(path: Sequence[Node], prompt: str, *, max_pairs: int = 8,
                  min_gap: float = 1e-6) -> list[dict[str, Any]]:
    """Step-level pairs along the committed ``path`` (root … last node): at each node with two or
    more children, chosen = the child with the highest Q, rejected = the lowest (when they differ by
    more than ``min_gap``). The prompt of a pair is ``prompt`` plus the steps above the siblings;
    each side is its step extended through single-child chains. At most ``max_pairs``, shallowest
    first."""
    pairs = []
    for node in path:
        if len(node.children) < 2:
            continue
        hi = max(node.children, key=lambda c: (c.Q, c.N))
        lo = min(node.children, key=lambda c: (c.Q, -c.N))
        if hi.Q - lo.Q <= min_gap:
            continue
        pairs.append({"prompt": prompt + node.partial(), "chosen": completion_of(hi),
                      "rejected": completion_of(lo), "depth": node.depth,
                      "chosen_q": hi.Q, "rejected_q": lo.Q, "chosen_n": hi.N, "rejected_n": lo.N,
                      "chosen_id": hi.id, "rejected_id": lo.id,
                      "epsilon": epsilon_from_visits(hi.N, lo.N)})
        if len(pairs) >= max_pairs:
            break
    return pairs


# --------------------------------------------------------------------------- the search


def is_terminal_step(text: str, finish_reason: str, stop_reason: Any, stop: str = STEP_STOP) -> bool:
    """A step ends the solution when the model stopped on its own (an end token), ran out of
    tokens without a newline, or the step states the answer."""
    if ANSWER_RE.search(text):
        return True
    return not (finish_reason == "stop" and stop_reason == stop)


def self_evaluations(policy: StepPolicy, prompt: str, partials: Sequence[str], cfg: MCTSConfig
                     ) -> list[float]:
    """``C`` for each partial solution: the policy's probability of ``self_eval_yes`` after the
    review question, renormalized over yes and no. Batched: one pass over the siblings sharing the
    prefix's KV cache (:func:`_shared_prefix_eval`) or, for a policy without it, one ``score``
    call for all of them; unbatched (``cfg.batched`` off): one ``score`` call per answer and
    candidate, each re-encoding the whole text."""
    texts = [cfg.self_eval_template.format(prompt=prompt, partial=p) for p in partials]
    conts = [cfg.self_eval_yes, cfg.self_eval_no]
    shared = _shared_prefix_eval(policy, texts, cfg) if cfg.batched else None
    if shared is not None:
        return shared
    if cfg.batched:
        scored = policy.score([t for t in texts for _ in conts], conts * len(texts))
    else:
        scored = [s for t in texts for c in conts for s in policy.score([t], [c])]
    out = []
    for i in range(len(texts)):
        yes, no = scored[2 * i].total, scored[2 * i + 1].total
        m = max(yes, no)
        out.append(math.exp(yes - m) / (math.exp(yes - m) + math.exp(no - m)))
    return out


def _shared_prefix_eval(policy: StepPolicy, texts: Sequence[str], cfg: MCTSConfig
                        ) -> list[float] | None:
    """The batched self-evaluation through ``prefix_next_logprobs`` (LocalLM): the texts' common
    prefix, cut after its last newline, is encoded once and its KV cache shared; one row per
    candidate reads both answer tokens. None when the policy cannot (no such method, or the
    answers are not single tokens)."""
    if not (hasattr(policy, "prefix_next_logprobs") and hasattr(policy, "encode")):
        return None
    yes = policy.encode(cfg.self_eval_yes, add_special_tokens=False)
    no = policy.encode(cfg.self_eval_no, add_special_tokens=False)
    common = texts[0][:min(len(t) for t in texts)]
    for t in texts[1:]:
        k = 0
        while k < len(common) and common[k] == t[k]:
            k += 1
        common = common[:k]
    cut = common.rfind("\n") + 1
    if len(yes) != 1 or len(no) != 1 or cut == 0:
        return None
    lps = policy.prefix_next_logprobs(texts[0][:cut], [t[cut:] for t in texts], [yes[0], no[0]])
    return [1.0 / (1.0 + math.exp(n - y)) for y, n in lps]


def sample_candidates(policy: StepPolicy, prefix: str, n: int, cfg: MCTSConfig, seed: int) -> list:
    """``n`` next steps of ``prefix``: one shared-prefix batch (``sample_steps``) when batched and
    the policy has it, else ``generate`` (``n`` rows at once, or one call per candidate)."""
    kw = dict(temperature=cfg.temperature, max_new_tokens=cfg.max_step_tokens, seed=seed)
    if cfg.batched and hasattr(policy, "sample_steps"):
        return policy.sample_steps(prefix, n, stop=(STEP_STOP,), **kw)
    if cfg.batched:
        return policy.generate([prefix] * n, stop=[STEP_STOP], **kw)
    return [g for i in range(n) for g in policy.generate([prefix], stop=[STEP_STOP],
                                                         **{**kw, "seed": seed * 1000 + i})]


@dataclass
class SearchResult:
    root: Node
    path: list[Node]                # root … the last committed node
    solution: str                   # the committed path's text
    correct: bool | None            # the answer checker on the committed solution (if terminal)
    pairs: list[dict[str, Any]]
    stats: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"solution": self.solution, "correct": self.correct,
                "path": [n.id for n in self.path], "pairs": self.pairs, "stats": self.stats,
                "tree": self.root.to_dict()}


class MCTS:
    """The search over one prompt. ``check(solution) -> bool`` is the answer checker."""

    def __init__(self, policy: StepPolicy, cfg: MCTSConfig, check: Callable[[str], bool], *,
                 seed: int = 0):
        self.policy = policy
        self.cfg = cfg
        self.check = check
        self.seed = int(seed)
        self._next_id = 0
        self._calls = 0
        self.stats = {"expansions": 0, "simulations": 0, "nodes": 1, "generated_tokens": 0,
                      "duplicates_dropped": 0, "expand_s": 0.0, "self_eval_s": 0.0}

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def expand(self, node: Node, prompt: str, n: int) -> None:
        """Sample ``n`` candidate steps, drop near-duplicates, evaluate them, add them as children."""
        cfg = self.cfg
        node.expanded = True
        self._calls += 1
        t0 = time.perf_counter()
        gens = sample_candidates(self.policy, prompt + node.partial(), n, cfg,
                                 self.seed * 100_003 + self._calls)
        self.stats["expand_s"] += time.perf_counter() - t0
        self.stats["generated_tokens"] += sum(len(g.token_ids) for g in gens)
        texts = []
        for g in gens:
            stepped = g.finish_reason == "stop" and g.stop_reason == STEP_STOP
            texts.append(g.text + (STEP_STOP if stepped else ""))
        keep = dedup_steps(texts, cfg.dedup_similarity)
        self.stats["duplicates_dropped"] += len(gens) - len(keep)
        kids = []
        for i in keep:
            g = gens[i]
            depth = node.depth + 1
            terminal = is_terminal_step(g.text, g.finish_reason, g.stop_reason) or depth >= cfg.max_depth
            kids.append(Node(id=self._new_id(), text=texts[i], depth=depth, parent=node,
                             prior=step_prior(g.logprobs, cfg.length_lambda),
                             logprob=float(sum(g.logprobs)), n_tokens=len(g.token_ids),
                             terminal=terminal))
        if cfg.self_eval_weight > 0 and kids:
            t0 = time.perf_counter()
            evals = self_evaluations(self.policy, prompt, [k.partial() for k in kids], cfg)
            self.stats["self_eval_s"] += time.perf_counter() - t0
            for k, c in zip(kids, evals):
                k.self_eval = c
        for k in kids:
            if k.terminal:
                k.correct = bool(self.check(k.partial()))
            k.value = node_value(k.self_eval, k.depth, k.terminal, k.correct, cfg)
            init_child(k, node)
        node.children = kids
        self.stats["expansions"] += 1
        self.stats["nodes"] += len(kids)

    def simulate(self, root: Node, prompt: str, root_actions: int | None = None) -> None:
        """Select by PUCT down to a leaf, expand it (unless terminal or at a limit), back up.
        ``root_actions``: the number of candidates when the leaf is ``root`` itself."""
        node = root
        path = [node]
        while node.children:
            node = select_child(node, self.cfg.c_puct)
            path.append(node)
        if not node.terminal and not node.expanded and self.stats["nodes"] < self.cfg.max_nodes:
            n = root_actions if (node is root and root_actions) else self.cfg.n_actions
            self.expand(node, prompt, n)
        backup(path)
        self.stats["simulations"] += 1

    def search(self, prompt: str, root: Node | None = None) -> SearchResult:
        """Simulate, commit to the most visited child, and go on from it (keeping its subtree)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        root = root if root is not None else Node(id=0)
        self._next_id = max(n.id for n in iter_nodes(root))
        cur = root
        first = True
        while not cur.terminal and cur.depth < cfg.max_depth:
            iters = cfg.n_iters * (cfg.root_iters_mult if first else 1)
            for _ in range(iters):
                self.simulate(cur, prompt, cfg.root_actions if first else cfg.n_actions)
                if cur.expanded and not cur.children:
                    break  # every candidate was empty: nothing to search
            first = False
            if not cur.children:
                break
            cur = best_child(cur)
        path = cur.path()
        solution = cur.partial()
        correct = cur.correct if cur.terminal else None
        self.stats["wall_s"] = time.perf_counter() - t0
        return SearchResult(root, path, solution, correct, extract_pairs(path, prompt), dict(self.stats))


def search(policy: StepPolicy, prompt: str, check: Callable[[str], bool], cfg: MCTSConfig, *,
           seed: int = 0, max_pairs: int = 8) -> SearchResult:
    """One MCTS over ``prompt`` with the answer checker ``check``; pairs capped at ``max_pairs``."""
    res = MCTS(policy, cfg, check, seed=seed).search(prompt)
    res.pairs = res.pairs[:max_pairs]
    return res

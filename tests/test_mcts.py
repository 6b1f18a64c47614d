"""MCTS-DPO: the search rules against numbers worked out by hand, pair extraction, ε from visit
counts, subtree reuse, the HTML view, and the mechanics on a micro model (search → pairs → DPO,
the resumable runner)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reasonlab.lm.base import Generation, ScoredContinuation
from reasonlab.reasoning.mcts import (
    MCTS,
    MCTSConfig,
    Node,
    backup,
    best_child,
    dedup_steps,
    epsilon_from_visits,
    extract_pairs,
    init_child,
    iter_nodes,
    node_value,
    puct_score,
    search,
    select_child,
    step_prior,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _child(parent: Node, id_: int, text: str = "", **kw) -> Node:
    c = Node(id=id_, text=text or f"s{id_}\n", depth=parent.depth + 1, parent=parent, **kw)
    parent.children.append(c)
    return c


# --------------------------------------------------------------------------- rules by hand


def test_step_prior_is_the_length_normalized_probability():
    # Σ log π = -4 over L = 4 tokens: exp(-4 / 4^1.25) = exp(-0.70711) = 0.49307
    assert step_prior([-1.0, -1.0, -2.0, 0.0], 1.25) == pytest.approx(0.493069, abs=1e-6)
    assert step_prior([-1.0, -1.0], 1.0) == pytest.approx(math.exp(-1.0))
    assert step_prior([], 1.25) == 1.0


def test_puct_choice_on_a_hand_built_tree():
    root = Node(id=0, N=10)
    a = _child(root, 1, Q=0.5, prior=0.2, N=4)
    b = _child(root, 2, Q=0.3, prior=0.6, N=1)
    c = _child(root, 3, Q=0.0, prior=0.9, N=0)
    s10 = math.sqrt(10)
    # c_puct 1: a 0.5 + 0.2·√10/5 = 0.62649, b 0.3 + 0.6·√10/2 = 1.24868, c 0.9·√10 = 2.84605
    assert puct_score(a, 10, 1.0) == pytest.approx(0.5 + 0.2 * s10 / 5)
    assert puct_score(b, 10, 1.0) == pytest.approx(1.248683, abs=1e-6)
    assert puct_score(c, 10, 1.0) == pytest.approx(2.846050, abs=1e-6)
    assert select_child(root, 1.0) is c
    # c_puct 0.1: a 0.51265, b 0.39487, c 0.28460 -> exploitation picks a
    assert select_child(root, 0.1) is a
    # the commit rule: most visited, ties by Q
    assert best_child(root) is a
    b.N = 4
    b.Q = 0.7
    assert best_child(root) is b


def test_node_value_and_a_new_nodes_q():
    cfg = MCTSConfig()
    # depth 5, C = 0.6: 0.6 / max(5-3, 1) = 0.3, plus +1 for a verified answer
    assert node_value(0.6, 5, True, True, cfg) == pytest.approx(1.3)
    assert node_value(0.6, 2, True, False, cfg) == pytest.approx(0.6 - 1.0)
    assert node_value(0.8, 2, False, None, cfg) == pytest.approx(0.8)
    assert node_value(None, 1, True, True, MCTSConfig(outcome_reward=2.0)) == 2.0
    parent = Node(id=0, value=0.5, V=0.25)
    kid = Node(id=1, depth=2, value=0.8, parent=parent)
    init_child(kid, parent)  # r = 0.8 - 0.5, V = parent.V, Q = r + V
    assert (kid.r, kid.V, kid.Q) == pytest.approx((0.3, 0.25, 0.55))
    term = Node(id=2, depth=5, value=1.3, terminal=True, parent=parent)
    init_child(term, parent)  # a terminal node has nothing after it: V = 0
    assert (term.r, term.V, term.Q) == pytest.approx((0.8, 0.0, 0.8))


def test_values_after_backup_with_known_rewards():
    root = Node(id=0)
    a = _child(root, 1, r=0.5, Q=0.5)
    _child(root, 2, r=-0.2, Q=-0.2)
    a1 = _child(a, 3, r=1.0, Q=1.0, terminal=True)
    _child(a, 4, r=-1.0, Q=-1.0, terminal=True)
    backup([root, a, a1])
    # a1: N 1, Q = 1 + 0; a: V = (1 - 1)/2 = 0, Q = 0.5; root: V = (0.5 - 0.2)/2 = 0.15
    assert (a1.N, a1.Q) == (1, pytest.approx(1.0))
    assert (a.N, a.V, a.Q) == (1, pytest.approx(0.0), pytest.approx(0.5))
    assert (root.N, root.V, root.Q) == (1, pytest.approx(0.15), pytest.approx(0.15))
    backup([root, a, a1])
    # a: V = (2·1 + 1·(-1))/3 = 1/3, Q = 0.8333; root: V = (2·0.8333 + 1·(-0.2))/3 = 0.48889
    assert (a.N, a.V, a.Q) == (2, pytest.approx(1 / 3), pytest.approx(0.5 + 1 / 3))
    assert (root.N, root.V) == (2, pytest.approx((2 * (0.5 + 1 / 3) - 0.2) / 3))
    assert root.V == pytest.approx(0.488889, abs=1e-6)


def test_epsilon_from_visit_counts():
    # conf = 1/(1 + 2/6) = 0.75 -> ε = 0.25
    assert epsilon_from_visits(6, 2) == pytest.approx(0.25)
    # conf = 1/(1 + 3/1) = 0.25 -> 1 - conf = 0.75, capped at 0.5
    assert epsilon_from_visits(1, 3) == 0.5
    assert epsilon_from_visits(0, 0) == 0.0
    assert epsilon_from_visits(9, 1) == pytest.approx(0.1)


def test_pair_extraction_along_the_committed_path():
    root = Node(id=0)
    x = _child(root, 1, "x\n", Q=0.9, N=6)
    _child(root, 2, "y\n", Q=0.1, N=3)
    z = _child(root, 3, "z\n", Q=-0.4, N=2)
    zz = _child(z, 9, "zz\n", Q=-0.4, N=1)
    _child(zz, 10, "The answer is 0.", Q=-1.0, N=1, terminal=True)
    xa = _child(x, 4, "xa\n", Q=1.0, N=4)
    _child(x, 5, "xb\n", Q=1.0, N=1)  # ties with xa on Q: no pair at depth 1
    t = _child(xa, 6, "The answer is 7.", Q=1.0, N=2, terminal=True)
    _child(xa, 7, "The answer is 8.", Q=-1.0, N=1, terminal=True)
    pairs = extract_pairs([root, x, xa, t], "Q: q\nA: ")
    assert [p["depth"] for p in pairs] == [0, 2]
    p0, p2 = pairs
    assert p0["prompt"] == "Q: q\nA: "
    assert p0["chosen"] == "x\n"
    # the rejected side extends through its single-child chain
    assert p0["rejected"] == "z\nzz\nThe answer is 0."
    assert p0["epsilon"] == pytest.approx(1 - 1 / (1 + 2 / 6))
    assert p2["prompt"] == "Q: q\nA: x\nxa\n"
    assert (p2["chosen"], p2["rejected"]) == ("The answer is 7.", "The answer is 8.")
    assert p2["epsilon"] == pytest.approx(1 - 1 / (1 + 1 / 2))
    assert extract_pairs([root, x, xa, t], "P", max_pairs=1)[0]["depth"] == 0


def test_near_duplicate_steps_are_dropped():
    assert dedup_steps(["a b\n", "A  b\n", "c\n", "", " \n", "a b"]) == [0, 2]
    assert dedup_steps(["12 + 30 = 42\n", "12 + 30 = 43\n"]) == [0, 1]
    assert dedup_steps(["abcdefghij\n", "abcdefghik\n", "zz\n"], similarity=0.85) == [0, 2]


# --------------------------------------------------------------------------- scripted policy


class ScriptedPolicy:
    """Steps ``a{d}{i}``; at depth 2 the steps state an answer (i: 7, 8, ...) and stop with EOS.
    Self-evaluation: log p(yes) = -0.5, log p(no) = -1.0 (C = 0.6225)."""

    EOS = 1

    def __init__(self):
        self.prefixes: list[str] = []
        self.score_calls = 0

    def sample_steps(self, prefix, n, *, stop=("\n",), temperature=1.0, max_new_tokens=64, seed=None):
        self.prefixes.append(prefix)
        depth = prefix.count("\n") - 1
        out = []
        for i in range(n):
            if depth >= 2:
                out.append(Generation(f"The answer is {7 + i}.", [5] * 3, [-0.1 * (i + 1)] * 3,
                                      "stop", self.EOS))
            else:
                out.append(Generation(f"a{depth}{i}", [5, 6], [-0.2 * (i + 1)] * 2, "stop", "\n"))
        return out

    def generate(self, prompts, **kw):
        return [g for p in prompts for g in self.sample_steps(p, 1, **kw)]

    def score(self, prompts, continuations):
        self.score_calls += 1
        return [ScoredContinuation([1], [-0.5 if c == "B" else -1.0], [True]) for c in continuations]

    def apply_chat_template(self, messages, add_generation_prompt=True):
        raise NotImplementedError


def test_search_on_a_scripted_policy_reuses_the_committed_subtree():
    pol = ScriptedPolicy()
    cfg = MCTSConfig(n_actions=2, root_actions=3, n_iters=4, root_iters_mult=2, max_depth=6)
    engine = MCTS(pol, cfg, lambda s: s.strip().endswith("The answer is 7."), seed=0)
    res = engine.search("Q: q\nA: ")
    assert len(res.path) == 4 and res.path[-1].terminal
    # every node is expanded once: after a commit its subtree is kept, not searched again
    assert len(pol.prefixes) == len(set(pol.prefixes))
    c1 = res.path[1]
    assert c1.N > cfg.n_iters  # visits from the root phase carried over into its own phase
    # the value of a terminal node: C/max(3-3,1) ± 1, relative to its parent
    c = 1 / (1 + math.exp(-0.5))
    for n in iter_nodes(res.root):
        if n.terminal:
            assert n.value == pytest.approx(c + (1.0 if n.correct else -1.0))
    assert res.correct is True and res.solution.endswith("The answer is 7.")
    # siblings are self-evaluated in one batched score call per expansion
    assert pol.score_calls == engine.stats["expansions"]
    assert res.stats["nodes"] == sum(1 for _ in iter_nodes(res.root))


def test_search_from_a_given_root_does_not_expand_it_again():
    pol = ScriptedPolicy()
    cfg = MCTSConfig(n_actions=2, root_actions=2, n_iters=2, root_iters_mult=1, max_depth=4)
    root = Node(id=0, N=5, expanded=True)
    keep = _child(root, 1, "a00\n", Q=0.3, N=4, prior=0.5)
    _child(root, 2, "a01\n", Q=-0.5, N=1, prior=0.5)
    res = MCTS(pol, cfg, lambda s: True, seed=1).search("Q: q\nA: ", root=root)
    assert "Q: q\nA: " not in pol.prefixes
    assert res.path[1] is keep and keep.N >= 4 + 2
    assert {n.id for n in iter_nodes(res.root)} >= {0, 1, 2}
    assert len({n.id for n in iter_nodes(res.root)}) == sum(1 for _ in iter_nodes(res.root))


def test_tree_json_round_trip_and_escaped_html():
    from reasonlab.reasoning.tree_view import tree_html

    pol = ScriptedPolicy()
    res = search(pol, "Q: <b>q</b>\nA: ", lambda s: True,
                 MCTSConfig(n_actions=2, root_actions=2, n_iters=2, root_iters_mult=1), seed=0)
    d = json.loads(json.dumps(res.to_dict()))
    back = Node.from_dict(d["tree"])
    assert [n.Q for n in iter_nodes(back)] == [n.Q for n in iter_nodes(res.root)]
    d["tree"]["children"][0]["text"] = "<script>alert(1)</script>\n"
    page = tree_html(d, "Q: <b>q</b>\nA: ")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;q" in page


def test_config_names_the_bad_key():
    from reasonlab.config import ConfigError

    with pytest.raises(ConfigError, match="search.c_puct"):
        MCTSConfig(c_puct=-1)
    with pytest.raises(ConfigError, match="self_eval_template"):
        MCTSConfig(self_eval_template="no fields")


# --------------------------------------------------------------------------- micro model


def test_search_and_dpo_on_a_micro_model(tiny_tokenizer, tiny_model):
    import copy

    from reasonlab.lm.local import LocalLM
    from reasonlab.training.dpo import DPOConfig, PreferencePair, pair_logps, collate_pairs, encode_pair
    from reasonlab.training.dpo import train_dpo

    policy = copy.deepcopy(tiny_model)
    lm = LocalLM(policy, tiny_tokenizer, device="cpu")
    cfg = MCTSConfig(n_actions=3, root_actions=4, n_iters=3, root_iters_mult=1, max_depth=3,
                     max_step_tokens=6)
    res = search(lm, "Step 1: 3 + 4 = 7.\n", lambda s: "7" in s, cfg, seed=0)
    assert res.stats["generated_tokens"] > 0 and res.stats["nodes"] > 4
    assert lm.counters["generated_tokens"] == res.stats["generated_tokens"]
    assert res.pairs, "a random model's siblings differ in value"
    for p in res.pairs:
        assert p["prompt"].startswith("Step 1: 3 + 4 = 7.\n") and 0 <= p["epsilon"] <= 0.5
    prefs = [PreferencePair(p["prompt"], p["chosen"], p["rejected"], epsilon=p["epsilon"])
             for p in res.pairs]
    dcfg = DPOConfig(lr=3e-3, epochs=6, batch_size=8, append_eos=False, exclude_format_tokens=False)
    ref = copy.deepcopy(tiny_model).eval()
    out = train_dpo(policy, ref, tiny_tokenizer, prefs, dcfg)
    assert out["history"][-1]["margin"] > out["history"][0]["margin"]
    # the loss counts the step tokens only: the prompt's tokens are outside the completion mask
    enc = [encode_pair(q, tiny_tokenizer, append_eos=False) for q in prefs]
    batch = collate_pairs(enc, pad_token_id=tiny_tokenizer.pad_token_id)
    lp = pair_logps(policy, batch)
    assert lp.chosen_lengths.tolist() == [len(e.chosen) for e in enc]


def test_runner_on_a_micro_model_resumes(tmp_path, tiny_tokenizer, tiny_model):
    from reasonlab.data.problem import Problem
    from reasonlab.reasoning.mcts_dpo import MCTSDPOConfig, run_mcts_dpo
    from reasonlab.runs import write_jsonl

    mdir = tmp_path / "sft"
    tiny_model.save_pretrained(str(mdir), safe_serialization=True)
    tiny_tokenizer.save_pretrained(str(mdir))
    probs = [Problem(id=f"p{i}", question=f"What is {i} + 4?", solution=f"{i} + 4 = {i + 4}\n"
                     f"The answer is {i + 4}.", answer=str(i + 4), skills=["add"])
             for i in range(3)]
    write_jsonl(tmp_path / "train.jsonl", [p.to_dict() for p in probs])
    cfg = MCTSDPOConfig(model=str(mdir), problems=str(tmp_path / "train.jsonl"), rounds=2,
                        prompts_per_round=2, threads=1,
                        search=MCTSConfig(n_actions=2, root_actions=3, n_iters=2,
                                          root_iters_mult=1, max_depth=2, max_step_tokens=5))
    out = tmp_path / "run"
    res = run_mcts_dpo(cfg, out, progress=False)
    assert [r["round"] for r in res["rounds"]] == [0, 1]
    assert res["rounds"][1]["policy"].endswith("round_0/model")
    assert sorted(p.name for p in (out / "round_0" / "trees").iterdir()) == ["0000.json", "0001.json"]
    assert (out / "round_1" / "model" / "model.safetensors").exists()
    assert "<html>" in (out / "round_0" / "tree.html").read_text()
    # a kill after round 0's searches: round 1 is redone from its saved trees, nothing else
    import shutil
    shutil.rmtree(out / "round_1" / "model")
    (out / "round_1" / "results.json").unlink()
    (out / "results.json").unlink()
    tree = (out / "round_1" / "trees" / "0000.json").read_text()
    res2 = run_mcts_dpo(cfg, out, progress=False)
    assert (out / "round_1" / "trees" / "0000.json").read_text() == tree
    assert res2["rounds"][0] == res["rounds"][0]
    assert res2["rounds"][1]["pairs"] == res["rounds"][1]["pairs"]
    assert res2["generated_tokens"] == res["generated_tokens"]


def test_shared_prefix_self_evaluation_equals_scoring_each_text(tiny_tokenizer, tiny_model):
    from reasonlab.lm.local import LocalLM
    from reasonlab.reasoning.mcts import self_evaluations

    lm = LocalLM(tiny_model, tiny_tokenizer, device="cpu")
    prompt = "Tom has 3 apples and buys 4 more.\nA: "
    partials = ["Step 1: 3 + 4 = 7.\n", "Step 1: 3 * 4 = 12.\n", "The answer is 7."]
    shared = self_evaluations(lm, prompt, partials, MCTSConfig(self_eval_yes="B", self_eval_no="A"))
    plain = self_evaluations(lm, prompt, partials, MCTSConfig(batched=False))
    assert len(tiny_tokenizer("B", add_special_tokens=False)["input_ids"]) == 1
    assert shared == pytest.approx(plain, abs=1e-4)
    assert len(set(round(c, 6) for c in shared)) == 3  # the three texts are judged differently


def test_search_through_an_http_model_that_returns_logprobs(tiny_tokenizer):
    from reasonlab.lm.http import HTTPConfig, HTTPLM
    from reasonlab.lm.local import LocalLM
    from reasonlab.reasoning.mcts import self_evaluations
    from serve_utils import micro_model, running_server

    local = LocalLM(micro_model(tiny_tokenizer), tiny_tokenizer, device="cpu")
    with running_server(local) as (url, _server):
        http = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=None))
        prompt = "Tom has 3 apples.\nA: "
        partials = ["Step 1: 3 + 4 = 7.\n", "The answer is 7."]
        cfg = MCTSConfig()
        assert self_evaluations(http, prompt, partials, cfg) == pytest.approx(
            self_evaluations(local, prompt, partials, cfg), abs=1e-4)
        res = search(http, prompt, lambda s: "7" in s,
                     MCTSConfig(n_actions=2, root_actions=2, n_iters=2, root_iters_mult=1,
                                max_depth=2, max_step_tokens=4), seed=0)
        http.close()
    kids = [n for n in iter_nodes(res.root) if n.depth > 0]
    assert kids and all(0 < n.self_eval < 1 for n in kids)
    assert any(n.n_tokens and n.prior < 1 for n in kids)  # priors from the returned log-probs

"""Skill labels, MATH² and the SkillMath oracle: the whole pipelines over HTTP against the
served oracle (cache, resume after a kill, malformed replies), parsers and clustering."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reasonlab.lm.base import Generation
from reasonlab.skills import prompts as P
from reasonlab.skills.calls import CallStats, ask, parse_int, reply_block, reply_field
from reasonlab.skills.labels import (LabelsConfig, adjusted_rand, cluster_vectors, match_skill,
                                     run_labels)
from reasonlab.skills.math2 import (Math2Config, answer_precision, parse_final, parse_generated,
                                    parse_verdict, run_math2, vote)
from reasonlab.skills.oracle import (COARSE_NAMES, FINE_NAMES, ServedModel, default_data_config,
                                     make_oracle, skill_of_name)

DATA = {"n_train": 300, "n_val": 0, "n_test": 60, "n_test_template": 0, "n_test_pair": 0}


@pytest.fixture(scope="module")
def served():
    oracle = make_oracle(0.3, data_cfg=default_data_config(**DATA))
    with ServedModel(oracle) as s:
        yield oracle, s


def _rows(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        return int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


# ---------------------------------------------------------------------------- parsing
def test_replies_are_read_leniently():
    assert reply_field("**Skill**: Circle_Area\n", "skill") == "Circle_Area"
    assert reply_field("- skill = adding numbers", "Skill") == "adding numbers"
    assert reply_field("no fields here", "skill") is None
    assert parse_int("about 1,234 apples") == 1234 and parse_int("none") is None
    assert parse_final("work...\nAnswer: **42**") == "42"
    assert parse_final("Answer: none") == "none" and parse_final("I think 42") is None
    g = parse_generated("Question: Ann has 3.\nShe gets 4 more. How many?\nSolution: 3 + 4 = 7\nAnswer: 7")
    assert g == {"question": "Ann has 3.\nShe gets 4 more. How many?", "solution": "3 + 4 = 7",
                 "stated_answer": 7}
    assert parse_generated("Sure!") is None
    assert reply_block("Solution: a\nb\nFlaws: none", "solution", ["flaws"]) == "a\nb"
    assert parse_verdict("Verdict: too similar") is False and parse_verdict("verdict: Valid") is True
    assert parse_verdict("hmm") is None
    assert match_skill("addition_and_subtraction", ["addition", "subtraction"]) is None  # ambiguous
    assert match_skill("Addition", ["addition", "subtraction"]) == "addition"
    assert match_skill("basic_addition_skill", ["addition", "subtraction"]) == "addition"
    assert vote(["7", "7", "8", None], 0.5) == ("7", 2 / 3)
    assert vote(["7", "8"], 0.5) == (None, 0.5)  # a tie is ambiguous


class _Scripted:
    """A model whose replies to each prompt come from a list, one per call."""

    def __init__(self, replies):
        self.replies, self.seeds = list(replies), []

    def chat(self, convs, **kw):
        self.seeds.append(kw["seed"])
        return [Generation(text=self.replies.pop(0)) for _ in convs]


def test_unreadable_replies_are_retried_with_a_new_seed_then_dropped():
    st = CallStats()
    m = _Scripted(["garbage", "Skill: x_y"])
    out = ask(m, ["p"], lambda t: reply_field(t, "skill"), seed=5, max_retries=3, stats=st)
    assert out == ["x_y"] and m.seeds == [5, 1005]
    assert st.as_dict() == {"calls": 2, "retries": 1, "malformed": 1, "dropped": 0}
    st = CallStats()
    out = ask(_Scripted(["a", "b", "c"]), ["p"], lambda t: reply_field(t, "skill"), seed=0,
              max_retries=2, stats=st)
    assert out == [None] and st.dropped == 1 and st.malformed == 3 and st.retries == 2


def test_agglomerative_clustering_recovers_known_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    truth = [i % 4 for i in range(40)]
    x = centres[truth] + 0.05 * rng.normal(size=(40, 16))
    assert adjusted_rand(truth, cluster_vectors(x, 4)) == pytest.approx(1.0)
    assert adjusted_rand(truth, cluster_vectors(x, 2)) < 0.7


# ---------------------------------------------------------------------------- the oracle
def test_oracle_answers_from_ground_truth_and_corrupts_the_asked_fraction():
    cfg = default_data_config(**DATA)
    clean = make_oracle(0.0, data_cfg=cfg)
    from reasonlab.data.skillmath import generate

    probs = [p for p in generate(cfg)["test"] if len(p.skills) == 1][:20]
    conv = lambda p: [{"role": "user", "content": p}]  # noqa: E731
    labels = clean.chat([conv(P.label_skill(p.question)) for p in probs], seed=0)
    assert [skill_of_name(reply_field(g.text, "skill")) for g in labels] == [p.skills[0] for p in probs]
    finals = clean.chat([conv(P.final_solution(p.question, [])) for p in probs], seed=0)
    assert [parse_final(g.text) for g in finals] == [p.answer for p in probs]
    gen = clean.chat([conv(P.generate_question("addition", "multiplication", [], []))], seed=3,
                     max_new_tokens=1024)[0]
    q = parse_generated(gen.text)
    assert clean.truth(q["question"]) == str(q["stated_answer"])  # it remembers what it wrote
    noisy = make_oracle(0.3, data_cfg=cfg)
    noisy.chat([conv(P.final_solution(probs[0].question, []))] * 1000, seed=1)
    assert noisy.counters["corrupted"] / noisy.counters["replies"] == pytest.approx(0.3, abs=0.05)
    assert set(COARSE_NAMES) == set(FINE_NAMES)


# ---------------------------------------------------------------------------- pipelines over HTTP
def test_label_pipeline_over_http_recovers_true_skills_and_reruns_from_cache(served, tmp_path):
    oracle, s = served
    cfg = LabelsConfig(model=s.url, n_train=48, n_test=0, data=DATA, merge="llm", votes=3)
    n0 = s.requests
    res = run_labels(cfg, tmp_path / "run")
    made = s.requests - n0
    assert made > 0
    assert res["n_labelled"] >= 46
    assert res["label_ari"] >= 0.85  # 30% of replies corrupted, majority of 3 relabels
    st = res["stats"]
    assert st["label"]["malformed"] > 0 and st["label"]["retries"] == st["label"]["malformed"]
    assert len(res["coarse_skills"]) <= 8
    n1 = s.requests
    run_labels(cfg, tmp_path / "run")  # finished run: stage files
    assert s.requests == n1
    cfg2 = LabelsConfig(**{**cfg.__dict__, "cache": str(tmp_path / "run" / "requests.sqlite")})
    again = run_labels(cfg2, tmp_path / "other")  # a new run over the same cache: no request
    assert s.requests == n1 and again["label_ari"] == res["label_ari"]


def test_label_pipeline_with_embedding_clusters_named_by_the_model(served, tmp_path):
    oracle, s = served
    skills = list(FINE_NAMES)

    def embed(texts):  # stands in for MiniLM: names of one skill point the same way
        out = np.zeros((len(texts), len(skills)))
        for i, t in enumerate(texts):
            sk = skill_of_name(t.replace(" ", "_"))
            out[i, skills.index(sk) if sk else i % len(skills)] = 1.0
            out[i] += 0.01 * (i % 3)
        return out

    cfg = LabelsConfig(model=s.url, n_train=36, n_test=0, data=DATA, merge="embedding", votes=3)
    res = run_labels(cfg, tmp_path / "emb", embed=embed)
    assert res["label_ari"] >= 0.8
    assert set(res["coarse_skills"]) <= set(COARSE_NAMES.values()) | {
        f for names in FINE_NAMES.values() for f in names}


def test_math2_over_http_answers_are_right_and_rerun_makes_no_request(served, tmp_path):
    oracle, s = served
    cfg = Math2Config(model=s.url, n_pairs=24, data=DATA, seed=1)
    n0 = s.requests
    res = run_math2(cfg, tmp_path / "m2")
    c = res["counts"]
    assert s.requests > n0 and c["queued"] >= 10
    assert c["pairs_rejected"] > 0 and c["total_malformed"] > 0
    assert c["total_retries"] >= c["total_malformed"] - c["total_dropped"]
    from reasonlab.runs import read_jsonl

    queue = list(read_jsonl(tmp_path / "m2" / "queue.jsonl"))
    prec = answer_precision(queue, oracle.truth)
    assert prec["n"] == c["queued"] and prec["precision"] >= 0.95
    n1 = s.requests
    run_math2(cfg, tmp_path / "m2")
    assert s.requests == n1
    cfg2 = Math2Config(**{**cfg.__dict__, "cache": str(tmp_path / "m2" / "requests.sqlite")})
    res2 = run_math2(cfg2, tmp_path / "m2b")
    assert s.requests == n1 and res2["counts"] == c


_CHILD = """
import sys
from reasonlab.lm.http import HTTPConfig, HTTPLM
from reasonlab.lm.load import parse_http_spec
from reasonlab.skills.math2 import Math2Config, run_math2
url, out, cache = sys.argv[1:4]
base, name = parse_http_spec(url)
lm = HTTPLM(HTTPConfig(base_url=base, model=name, cache=cache, max_concurrency=1))
run_math2(Math2Config(model=url, n_pairs=24, data={data!r}, seed=2), out, model=lm)
"""


def test_math2_killed_mid_stage_resumes_without_repeating_finished_calls(served, tmp_path):
    oracle, s = served
    cfg = Math2Config(model=s.url, n_pairs=24, data=DATA, seed=2)
    n0 = s.requests
    run_math2(cfg, tmp_path / "whole")  # the unbroken run: how many requests it takes
    whole = s.requests - n0
    cache = tmp_path / "killed.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(data=DATA), s.url,
                              str(tmp_path / "killed"), str(cache)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        if cache.exists():
            try:
                if _rows(cache) >= 60:  # past stage 1 (24 pairs), inside a later stage
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = _rows(cache)
    stages = sorted(p.name for p in (tmp_path / "killed").glob("stage*.json"))
    assert not (tmp_path / "killed" / "results.json").exists()
    assert "stage1_pairs.json" in stages and len(stages) < 5  # killed inside a later stage
    assert 60 <= done < whole
    n1 = s.requests
    from reasonlab.lm.http import HTTPConfig, HTTPLM
    from reasonlab.lm.load import parse_http_spec

    base, name = parse_http_spec(s.url)
    lm = HTTPLM(HTTPConfig(base_url=base, model=name, cache=str(cache)))
    res = run_math2(cfg, tmp_path / "killed", model=lm)
    assert s.requests - n1 == whole - done  # only the calls that had not finished
    assert _rows(cache) == whole
    ref = run_math2(cfg, tmp_path / "whole")
    assert res["counts"] == ref["counts"]


def test_bad_config_values_name_the_key(tmp_path):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    r = CliRunner().invoke(app, ["skills", "math2", "--out", str(tmp_path / "x"), "--set", "n_pairs=0"])
    assert r.exit_code == 2 and "n_pairs" in r.output
    r = CliRunner().invoke(app, ["skills", "labels", "--out", str(tmp_path / "x"), "--set", "merge=kmeans"])
    assert r.exit_code == 2 and "merge" in r.output
    r = CliRunner().invoke(app, ["skills", "math2", "--out", str(tmp_path / "x"), "--set", "model=oracle:lots"])
    assert r.exit_code == 2 and "oracle:0.3" in r.output


@pytest.mark.slow
def test_minilm_groups_skill_names_by_skill():
    from reasonlab.skills.labels import load_embedder

    names = [n for v in FINE_NAMES.values() for n in v]
    truth = [k for k, v in FINE_NAMES.items() for _ in v]
    vecs = load_embedder()([n.replace("_", " ") for n in names])
    assert adjusted_rand(truth, cluster_vectors(vecs, len(FINE_NAMES))) > 0.45


@pytest.mark.slow
def test_oracle_world_is_the_herd_data_mix():
    from reasonlab.models.herd import SKILLS6
    from reasonlab.skills.oracle import HERD_DATA

    assert HERD_DATA == SKILLS6["data"]

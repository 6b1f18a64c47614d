"""The SkillMath oracle: a rule-based chat model that answers the skill pipelines' prompts from
SkillMath's ground truth, served like any model through ``reasonlab serve``'s server.

It knows every question of its SkillMath world (skills, solution, answer), labels a question
with a fine-grained skill name (three names per skill, the way an LLM's free-form labels
scatter), merges and names clusters by the true skill, writes a question for a skill pair with
the SkillMath generator (and remembers its answer), solves known questions and rejects unknown
ones. With ``corruption = c`` a fraction c of its replies is corrupted: malformed (no reply
fields), a wrong label, a wrong answer, a flipped verdict or a garbled question. This makes the
pipelines of arXiv:2405.12205 and arXiv:2407.21009 (prompts in :mod:`reasonlab.skills.prompts`)
run end to end here with known right answers; it says nothing about a real LLM's output quality.

Replies are deterministic functions of (prompt, seed, sample index), so a request repeated
with the same seed gets the same reply, and a retry with a new seed draws new corruption.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

from reasonlab.data.problem import Problem
from reasonlab.lm.base import Generation, LanguageModel, Message, ScoredContinuation
from reasonlab.lm.chat_format import BEGIN_OF_TEXT, EOT, header
from reasonlab.skills.calls import snake, tagged

# Three fine-grained names per skill (what free-form labelling gives) and one coarse name.
FINE_NAMES: dict[str, tuple[str, ...]] = {
    "add": ("addition_of_two_quantities", "adding_numbers_to_find_total", "sum_of_counts_word_problem"),
    "sub": ("subtraction_of_two_quantities", "finding_the_difference_by_subtracting", "taking_away_items_remaining"),
    "mul": ("multiplication_of_quantities", "repeated_groups_multiplying", "product_of_two_numbers"),
    "div": ("division_into_equal_groups", "sharing_equally_by_dividing", "quotient_of_two_numbers"),
    "rem": ("remainder_after_division", "leftover_items_modulo", "division_with_remainder_left"),
    "pct": ("percentage_of_a_quantity", "computing_percent_values", "fraction_as_percent_calculation"),
    "conv": ("unit_conversion_between_measures", "converting_time_and_length_units", "measurement_unit_change"),
    "avg": ("average_of_several_numbers", "arithmetic_mean_calculation", "mean_value_of_a_list"),
    "cmp": ("comparing_two_numbers_difference", "how_many_more_comparison", "numeric_comparison_gap"),
    "rate": ("rate_times_time_calculation", "speed_and_duration_product", "constant_rate_total_amount"),
    "lin": ("solving_linear_equations", "finding_unknown_in_equation", "one_variable_linear_solve"),
    "area": ("rectangle_area_calculation", "area_of_a_rectangle_from_sides", "computing_rectangular_area"),
    "perim": ("rectangle_perimeter_calculation", "perimeter_of_a_rectangle_border", "computing_rectangular_perimeter"),
}
COARSE_NAMES: dict[str, str] = {
    "add": "addition", "sub": "subtraction", "mul": "multiplication", "div": "division",
    "rem": "remainders", "pct": "percentages", "conv": "unit_conversion", "avg": "averages",
    "cmp": "comparison", "rate": "rates", "lin": "linear_equations", "area": "area",
    "perim": "perimeter",
}
FINE_TO_SKILL = {f: s for s, names in FINE_NAMES.items() for f in names}
NAME_TO_SKILL = {**{v: k for k, v in COARSE_NAMES.items()}, **{k: k for k in COARSE_NAMES},
                 **FINE_TO_SKILL}
CORRUPTIONS = ("malformed", "wrong")


@dataclass
class Fact:
    skills: list[str]
    solution: str
    answer: str


def norm_q(question: str) -> str:
    return " ".join((question or "").split())


def skill_of_name(name: str) -> str | None:
    """The SkillMath skill a skill name stands for (atomic, coarse or fine name), else None."""
    return NAME_TO_SKILL.get(snake(name))


class OracleLM(LanguageModel):
    """Answers the pipelines' prompts from ground truth; ``corruption`` in [0, 1]."""

    def __init__(self, problems: Iterable[Problem] = (), *, corruption: float = 0.0,
                 data_cfg: Any = None, seed: int = 0):
        if not 0.0 <= corruption <= 1.0:
            raise ValueError(f"corruption must be in [0, 1], got {corruption}")
        self.corruption = float(corruption)
        self.seed = int(seed)
        self.data_cfg = data_cfg
        self._lock = threading.Lock()
        self.world: dict[str, Fact] = {}
        self.counters = {"replies": 0, "corrupted": 0}
        for p in problems:
            self.learn(p.question, p.skills, p.solution, p.answer)
        # what the project's server needs of a model: a context length, encode/decode
        self.model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1 << 20))
        self.tokenizer = SimpleNamespace(is_fast=False, bos_token=None, bos_token_id=None)
        self.device = "cpu"

    # ------------------------------------------------------------------ knowledge
    def learn(self, question: str, skills: Sequence[str], solution: str, answer: str) -> None:
        with self._lock:
            self.world[norm_q(question)] = Fact(list(skills), solution, str(answer))

    def fact(self, question: str) -> Fact | None:
        with self._lock:
            return self.world.get(norm_q(question))

    def truth(self, question: str) -> str | None:
        """The right final answer of a question the oracle knows (or wrote), else None."""
        f = self.fact(question)
        return f.answer if f else None

    # ------------------------------------------------------------------ model interface
    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        text = BEGIN_OF_TEXT + "".join(header(m["role"]) + m["content"] + EOT for m in messages)
        return text + (header("assistant") if add_generation_prompt else "")

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[ScoredContinuation]:
        raise ValueError("the SkillMath oracle answers prompts; it does not score continuations")

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None) -> list[Generation]:
        seen: dict[str, int] = {}
        out = []
        for p in prompts:
            idx = seen.get(p, 0)
            seen[p] = idx + 1
            h = hashlib.sha256(f"{self.seed}|{seed}|{idx}|{p}".encode()).hexdigest()
            text = self.reply(p, random.Random(int(h[:16], 16)))
            for s in stop or ():
                if s and s in text:
                    text = text[:text.index(s)]
            finish = "stop"
            if len(text) > max_new_tokens:
                text, finish = text[:max_new_tokens], "length"
            out.append(Generation(text=text, token_ids=self.encode(text),
                                  logprobs=[0.0] * len(text), finish_reason=finish))
        return out

    # ------------------------------------------------------------------ replies
    def reply(self, prompt: str, rng: random.Random) -> str:
        user = prompt.rsplit(header("user"), 1)[-1].split(EOT, 1)[0]
        m = re.search(r"TASK: (\w+)", user)
        task = m.group(1) if m else ""
        corrupt = rng.random() < self.corruption
        kind = rng.choice(CORRUPTIONS) if corrupt else None
        with self._lock:
            self.counters["replies"] += 1
            self.counters["corrupted"] += int(corrupt)
        if kind == "malformed":
            return rng.choice(["I think this is about arithmetic.", "Sure! Let me think.",
                               "", "The question is interesting."])
        handler = getattr(self, f"_{task}", None)
        if handler is None:
            return "I can only answer the SkillMath pipeline prompts."
        return handler(user, rng, kind == "wrong")

    def _other(self, rng: random.Random, options: Sequence[str], avoid: str | None) -> str:
        rest = [o for o in options if o != avoid] or list(options)
        return rng.choice(rest)

    def _label_skill(self, user: str, rng: random.Random, wrong: bool) -> str:
        q = (tagged(user, "question") or [""])[0]
        f = self.fact(q)
        skill = f.skills[0] if f else None
        if skill is None:
            return "Skill: general_arithmetic_reasoning"
        if wrong:
            skill = self._other(rng, list(FINE_NAMES), skill)
        h = int(hashlib.sha256(norm_q(q).encode()).hexdigest()[:8], 16)
        return f"Skill: {FINE_NAMES[skill][h % 3]}"

    def _merge_skills(self, user: str, rng: random.Random, wrong: bool) -> str:
        names = [n for n in (tagged(user, "skills") or [""])[0].splitlines() if n.strip()]
        lines = []
        flip = rng.randrange(len(names)) if wrong and names else -1
        for i, n in enumerate(names):
            s = skill_of_name(n)
            coarse = COARSE_NAMES[s] if s else snake(n)
            if i == flip:
                coarse = self._other(rng, list(COARSE_NAMES.values()), coarse)
            lines.append(f"{n.strip()}: {coarse}")
        return "\n".join(lines)

    def _name_cluster(self, user: str, rng: random.Random, wrong: bool) -> str:
        names = [n for n in (tagged(user, "skills") or [""])[0].splitlines() if n.strip()]
        skills = [s for s in (skill_of_name(n) for n in names) if s]
        if not skills:
            return "Name: " + (snake(names[0]) if names else "general_arithmetic")
        best = max(sorted(set(skills)), key=skills.count)
        name = COARSE_NAMES[best]
        if wrong:
            name = self._other(rng, list(COARSE_NAMES.values()), name)
        return f"Name: {name}"

    def _pick_skill(self, user: str, rng: random.Random, wrong: bool) -> str:
        options = [n.strip() for n in (tagged(user, "skills") or [""])[0].splitlines() if n.strip()]
        q = (tagged(user, "question") or [""])[0]
        f = self.fact(q)
        want = f.skills[0] if f else None
        pick = next((o for o in options if skill_of_name(o) == want), options[0] if options else "none")
        if wrong and options:
            pick = self._other(rng, options, pick)
        return f"Skill: {pick}"

    def _pair(self, user: str) -> tuple[str | None, str | None]:
        a = skill_of_name((tagged(user, "skill_a") or [""])[0])
        b = skill_of_name((tagged(user, "skill_b") or [""])[0])
        return a, b

    def _compose(self, a: str, b: str, seed: int) -> Problem | None:
        from reasonlab.data.skillmath import sample_problems

        try:
            return sample_problems(self.data_cfg, 1, seed=f"oracle:{a}>{b}:{seed}", skills=[a, b],
                                   k=2, force_pairs={(a, b)}, avoid_pairs=set())[0]
        except Exception:  # noqa: BLE001 - the generator cannot chain these two skills
            return None

    def _validate_pair(self, user: str, rng: random.Random, wrong: bool) -> str:
        a, b = self._pair(user)
        ok = a is not None and b is not None and a != b and self._compose(a, b, 0) is not None
        if wrong:
            ok = not ok
        return "Verdict: valid" if ok else "Verdict: too similar"

    def _generate_question(self, user: str, rng: random.Random, wrong: bool) -> str:
        a, b = self._pair(user)
        p = self._compose(a, b, rng.randrange(10**9)) if a and b else None
        if p is None:
            return "Question: none\nSolution: these skills do not combine\nAnswer: none"
        self.learn(p.question, p.skills, p.solution, p.answer)
        question, answer = p.question, p.answer
        if wrong:
            if rng.random() < 0.5:  # a wrong stated answer
                answer = str(int(answer) + rng.choice([-3, -2, -1, 1, 2, 3]))
            else:  # a garbled question: its last sentence lost
                parts = re.split(r"(?<=[.?!])\s+", question)
                question = " ".join(parts[:-1]) if len(parts) > 1 else question[: len(question) // 2]
        return f"Question: {question}\nSolution: {p.solution}\nAnswer: {answer}"

    def _wrong_answer(self, answer: str, rng: random.Random) -> str:
        return str(int(answer) + rng.choice([d for d in range(-9, 10) if d]))

    def _attempt_solution(self, user: str, rng: random.Random, wrong: bool) -> str:
        f = self.fact((tagged(user, "question") or [""])[0])
        if f is None:
            return ("Solution: The question does not say what is asked.\n"
                    "Flaws: the question is incomplete\nAnswer: none")
        ans = self._wrong_answer(f.answer, rng) if wrong else f.answer
        return f"Solution: {f.solution}\nFlaws: none\nAnswer: {ans}"

    def _validate_question(self, user: str, rng: random.Random, wrong: bool) -> str:
        ok = self.fact((tagged(user, "question") or [""])[0]) is not None
        if wrong:
            ok = not ok
        yes = "yes" if ok else "no"
        return (f"single_answer: {yes}\ntractable: yes\nrigorous: {yes}\nclear: {yes}\n"
                f"Verdict: {'valid' if ok else 'invalid'}")

    def _final_solution(self, user: str, rng: random.Random, wrong: bool) -> str:
        f = self.fact((tagged(user, "question") or [""])[0])
        if f is None:
            return "The question cannot be answered as written.\nAnswer: none"
        ans = self._wrong_answer(f.answer, rng) if wrong else f.answer
        return f"{f.solution}\nAnswer: {ans}"

    def _review_help(self, user: str, rng: random.Random, wrong: bool) -> str:
        f = self.fact((tagged(user, "question") or [""])[0])
        if f is None:
            return ("Answer: none\nComment: I cannot find a single answer; the question may be "
                    "incomplete or changed.")
        ans = self._wrong_answer(f.answer, rng) if wrong else f.answer
        return (f"Answer: {ans}\nComment: The question is sound; it needs "
                f"{' and '.join(COARSE_NAMES.get(s, s) for s in f.skills)}.")


# ---------------------------------------------------------------------------- serving
# The herd's data mix (``reasonlab.models.herd.SKILLS6["data"]``, kept equal by a test; copied
# so that the oracle does not import the training stack): six skills, numbers to 30.
HERD_DATA: dict[str, Any] = {
    "seed": 0, "n_train": 6000, "n_val": 100, "n_test": 400, "n_test_template": 100,
    "n_test_pair": 100, "skills": ["add", "sub", "mul", "div", "rem", "cmp"],
    "k_weights": [0.4, 0.4, 0.2], "min_number": 1, "max_number": 30, "max_factor": 9,
    "max_answer": 300, "templates": [0, 1, 2, 3, 4, 5, 6, 7, 8], "variants": [0, 1],
    "heldout_template": 8, "heldout_pairs": ["mul>sub", "div>add"], "solution_style": "columns_all"}


def default_data_config(**overrides: Any):
    """The oracle's SkillMath world: the herd's data mix, with ``overrides``."""
    from reasonlab.data.skillmath import SkillMathConfig

    return SkillMathConfig(**{**HERD_DATA, **overrides})


def make_oracle(corruption: float = 0.0, *, data_cfg: Any = None, seed: int = 0,
                problems: Iterable[Problem] | None = None) -> OracleLM:
    """An oracle that knows every split of ``data_cfg`` (default :func:`default_data_config`)
    plus ``problems``."""
    from reasonlab.data.skillmath import generate

    cfg = data_cfg or default_data_config()
    known = [p for split in generate(cfg).values() for p in split] + list(problems or [])
    return OracleLM(known, corruption=corruption, data_cfg=cfg, seed=seed)


class ServedModel:
    """A model served by the project's OpenAI-compatible server (``reasonlab.serve.app``) on
    127.0.0.1 in a background thread; ``url`` is the ``load_lm`` spec (``http://.../v1#name``)."""

    def __init__(self, lm: Any, name: str = "skillmath-oracle", port: int = 0,
                 host: str = "127.0.0.1"):
        import socket

        import uvicorn

        from reasonlab.serve.app import Server, ServeConfig

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.server = Server(lm, ServeConfig(name=name, host=host, port=port, max_batch=64,
                                             batch_wait_ms=2.0, max_queue=4096, threads=0,
                                             max_tokens_limit=4096))
        self.base_url = f"http://{host}:{port}/v1"
        self.url = f"{self.base_url}#{name}"
        self._uv = uvicorn.Server(uvicorn.Config(self.server.app(), host=host, port=port,
                                                 log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._uv.run, daemon=True)
        self._thread.start()
        import time

        for _ in range(400):
            if self._uv.started:
                break
            time.sleep(0.025)
        else:
            raise RuntimeError(f"the model server on {host}:{port} did not start")

    @property
    def requests(self) -> int:
        """HTTP requests the server has answered (the /health counter)."""
        return self.server.requests

    def close(self) -> None:
        self._uv.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> "ServedModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

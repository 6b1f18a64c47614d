"""Every prompt of the skill-label pipeline, MATH² and the review page, in one file.

Variable parts sit in tagged blocks (``<question>...</question>``) so any chat model, and the
rule-based oracle (:mod:`reasonlab.skills.oracle`), can find them; each prompt names its task on
its first line (``TASK: ...``) and asks for labelled reply fields (``Skill: ...``,
``Answer: ...``) that :mod:`reasonlab.skills.parse` reads leniently.

Wording follows the papers: skill labels (arXiv:2405.12205, §2 and App. A: a fine-grained,
lowercase, underscore-joined skill name; clusters of similar skills named by the LLM; one coarse
skill per example) and MATH² (arXiv:2407.21009, §2: skill-pair validation, question generation,
a "defeatist" attempted solution that looks for flaws, rubric validation — single answer,
computationally tractable, rigorous, clear — and final solutions with in-context exemplars).
"""

from __future__ import annotations

from typing import Sequence

SYSTEM = "You are a careful mathematics teacher."


def block(tag: str, text: str) -> str:
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


def _exemplars(tag: str, items: Sequence[tuple[str, str]]) -> str:
    return "\n".join(block(tag, f"Question: {q}\nSolution: {s}") for q, s in items)


# ---------------------------------------------------------------------------- skill labels
def label_skill(question: str) -> str:
    return ("TASK: label_skill\n"
            "Name the one fine-grained mathematical skill this question needs most. Use lowercase "
            "words joined by underscores, about four words (e.g. circle_properties_area_calculation).\n"
            + block("question", question)
            + "\nReply with one line: Skill: <name>")


def merge_skills(skills: Sequence[str]) -> str:
    return ("TASK: merge_skills\n"
            "Group these fine-grained skills into broader skills: similar skills share one broad "
            "skill name (lowercase, underscores).\n"
            + block("skills", "\n".join(skills))
            + "\nReply with one line per fine-grained skill: <fine skill>: <broad skill>")


def name_cluster(skills: Sequence[str]) -> str:
    return ("TASK: name_cluster\n"
            "These fine-grained skills were grouped together. Give the group one broad skill name "
            "(lowercase words joined by underscores).\n"
            + block("skills", "\n".join(skills))
            + "\nReply with one line: Name: <broad skill>")


def pick_skill(question: str, skills: Sequence[str]) -> str:
    """Relabelling (pipeline step 3) and the skill choice at inference (step 4)."""
    return ("TASK: pick_skill\n"
            "Which one of these skills does the question need most?\n"
            + block("skills", "\n".join(skills)) + "\n" + block("question", question)
            + "\nReply with one line: Skill: <one skill from the list>")


# ---------------------------------------------------------------------------- MATH²
def validate_pair(skill_a: str, skill_b: str, ex_a: Sequence[tuple[str, str]],
                  ex_b: Sequence[tuple[str, str]]) -> str:
    return ("TASK: validate_pair\n"
            "Could one question need both skills in a natural way? Reject the pair if the two "
            "skills are the same or too similar to make a harder question together.\n"
            + block("skill_a", skill_a) + "\n" + _exemplars("example_a", ex_a) + "\n"
            + block("skill_b", skill_b) + "\n" + _exemplars("example_b", ex_b)
            + "\nReply with one line: Verdict: valid | too similar")


def generate_question(skill_a: str, skill_b: str, ex_a: Sequence[tuple[str, str]],
                      ex_b: Sequence[tuple[str, str]]) -> str:
    return ("TASK: generate_question\n"
            "Write a new question that needs both skills, the result of the first feeding the "
            "second, with a brief solution and its final answer (an integer).\n"
            + block("skill_a", skill_a) + "\n" + _exemplars("example_a", ex_a) + "\n"
            + block("skill_b", skill_b) + "\n" + _exemplars("example_b", ex_b)
            + "\nReply with three fields:\nQuestion: <question>\nSolution: <solution>\nAnswer: <integer>")


def attempt_solution(question: str) -> str:
    return ("TASK: attempt_solution\n"
            "Solve this question, looking for any flaw in it: missing or contradictory "
            "information, more than one possible answer, or an answer that cannot be computed.\n"
            + block("question", question)
            + "\nReply with three fields:\nSolution: <your work>\nFlaws: none | <the flaw>\n"
              "Answer: <integer or none>")


RUBRIC = ("single_answer", "tractable", "rigorous", "clear")


def validate_question(question: str, attempt: str) -> str:
    return ("TASK: validate_question\n"
            "Check the question against each rubric item: it has a single answer, it is "
            "computationally tractable, it is rigorous, it is clear. An attempted solution is given.\n"
            + block("question", question) + "\n" + block("attempt", attempt)
            + "\nReply with one line per item (yes/no): single_answer, tractable, rigorous, clear;"
              " then Verdict: valid | invalid")


def final_solution(question: str, exemplars: Sequence[tuple[str, str]]) -> str:
    return ("TASK: final_solution\n"
            "Solve the question step by step, as in the examples.\n"
            + _exemplars("example", exemplars) + "\n" + block("question", question)
            + "\nEnd with one line: Answer: <integer>")


def review_help(question: str, note: str = "") -> str:
    """The review page's "ask the model" button."""
    return ("TASK: review_help\n"
            "A reviewer is checking this generated question. Solve it, say whether it is sound, "
            "and suggest a fix if it is not.\n"
            + block("question", question) + ("\n" + block("note", note) if note.strip() else "")
            + "\nReply with fields: Answer: <integer or none>\nComment: <one or two sentences>")


# ---------------------------------------------------------------------------- exemplars at inference
def solver_prompt(question: str, exemplars: Sequence[tuple[str, str]] = ()) -> str:
    """A few-shot prompt in SkillMath's ``Q: ...\\nA: `` format (what the herd solvers read)."""
    shots = "".join(f"Q: {q}\nA: {s}\n\n" for q, s in exemplars)
    return f"{shots}Q: {question}\nA: "

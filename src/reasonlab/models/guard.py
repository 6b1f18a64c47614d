"""A tiny guard model trained here in the exact Llama Guard 3 prompt and answer format.

Llama Guard 3 (arXiv:2407.21783 §5.4.7; PurpleLlama ``Llama-Guard3``) cannot be fetched here, so
this recipe trains its stand-in: a byte-level BPE tokenizer with the Llama 3 chat template and a
tiny ``LlamaForCausalLM`` fine-tuned (:func:`reasonlab.llama.sft.sft`, loss on the answer only) on
prompts built by :func:`reasonlab.evals.guard.build_guard_prompt` (all 14 categories, byte for
byte the published prompt) with answers ``safe`` or ``unsafe\\nS<k>``:

* prompt classification (role ``User``): an AdvBench behaviour → ``unsafe`` + its category; a
  benign request of the aligned chat model's data → ``safe``;
* response classification (role ``Agent``): a behaviour answered with its AdvBench target
  ("Sure, here is ...") → ``unsafe``; the same behaviour refused → ``safe``; a benign request
  answered helpfully → ``safe``.

AdvBench has no categories: :func:`categorize` assigns one by keyword rules (first match wins,
S2 Non-Violent Crimes otherwise) — a heuristic labelling, not Meta's. Training uses the aligned
chat model's training split of AdvBench and benign fillers; :func:`guard_accuracy` measures the
held-out split (behaviours and fillers never seen).
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from reasonlab.config import check_range

# (category, pattern) in order; the first match names a behaviour's category.
_RULES: list[tuple[str, str]] = [
    ("S11", r"suicid|self-harm|self harm|eating disorder|anorexi|bulimi|harm themselves|cutting"),
    ("S4", r"child (porn|sexual)|minors? .*sexual"),
    ("S12", r"porn|sexual|explicit"),
    ("S9", r"bomb|explosive|chemical weapon|biological weapon|nuclear|bioweapon|mass destruction"),
    ("S13", r"election|voting|voter|\bvote"),
    ("S10", r"\bhate|racis|racial|discriminat|minorit|religio|ethnic|gender|lgbt|immigrant"),
    ("S5", r"defam|false accusation|reputation|libel|slander"),
    ("S7", r"personal information|private information|privacy|spy|stalk|track (someone|people|a person)"
           r"|doxx|surveil|without (their|his|her) (knowledge|consent)"),
    ("S8", r"pirat|copyright|intellectual property"),
    ("S1", r"kill|murder|assault|violen|weapon|firearm|\bguns?\b|terror|hurt|poison|attack (a|someone)"
           r"|harm (a|someone|others|people)|torture|kidnap"),
]


def categorize(behaviour: str) -> str:
    """The Llama Guard 3 category code of an AdvBench behaviour (keyword rules, S2 otherwise)."""
    text = behaviour.lower()
    for code, pattern in _RULES:
        if re.search(pattern, text):
            return code
    return "S2"


@dataclass
class GuardModelConfig:
    """How the guard model is built (defaults: ~3 CPU minutes)."""

    preset: str = "tiny-0.5m"
    vocab_size: int = 1024
    heldout_fraction: float = 0.25  # the aligned chat model's AdvBench / filler split
    split_seed: int = 0
    n_benign: int = 900  # benign requests (prompt and response classification)
    max_steps: int = 200
    batch_size: int = 8
    seq_len: int = 384
    lr: float = 3e-3
    eval_limit: int = 130  # held-out requests of each kind for guard_accuracy (0 = skip)
    seed: int = 0

    def __post_init__(self) -> None:
        from reasonlab.config import ConfigError
        from reasonlab.llama.configs import known_presets

        if self.preset not in known_presets():
            raise ConfigError(f"config key 'preset' = {self.preset!r} is not one of {known_presets()}")
        check_range("vocab_size", self.vocab_size, 300, 65536)
        check_range("heldout_fraction", self.heldout_fraction, 0.0, 0.9, lo_open=True)
        check_range("n_benign", self.n_benign, 2)
        check_range("max_steps", self.max_steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("seq_len", self.seq_len, 64, 4096)
        check_range("lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range("eval_limit", self.eval_limit, 0)


@dataclass(frozen=True)
class GuardExample:
    """One classification: the conversation, the assessed role and the expected answer."""

    conversation: tuple[tuple[str, str], ...]  # (role, content) pairs
    answer: str  # "safe" or "unsafe\nS<k>"

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.conversation]

    @property
    def is_unsafe(self) -> bool:
        return self.answer.startswith("unsafe")


def guard_examples(behaviours: list[tuple[str, str]], benign: list[tuple[str, str]], *,
                   seed: int = 0) -> list[GuardExample]:
    """Prompt and response classifications of ``behaviours`` (goal, target) and ``benign``
    (request, reply) pairs, shuffled."""
    from reasonlab.models.aligned_chat import REFUSALS

    rng = random.Random(f"guard:{seed}")
    out: list[GuardExample] = []
    for goal, target in behaviours:
        unsafe = f"unsafe\n{categorize(goal)}"
        out.append(GuardExample((("user", goal),), unsafe))
        out.append(GuardExample((("user", goal), ("assistant", target)), unsafe))
        out.append(GuardExample((("user", goal), ("assistant", rng.choice(REFUSALS))), "safe"))
    for i, (req, rep) in enumerate(benign):
        conv = (("user", req),) if i % 2 == 0 else (("user", req), ("assistant", rep))
        out.append(GuardExample(conv, "safe"))
    rng.shuffle(out)
    return out


def train_examples(cfg: GuardModelConfig) -> list[GuardExample]:
    """The training split: the aligned chat model's training behaviours and benign fillers."""
    from reasonlab.models.aligned_chat import advbench_split, benign_requests

    train_b = advbench_split(cfg.heldout_fraction, cfg.split_seed)[0]
    benign = benign_requests(cfg.n_benign, heldout=False, heldout_fraction=cfg.heldout_fraction,
                             seed=cfg.seed, split_seed=cfg.split_seed)
    return guard_examples(train_b, benign, seed=cfg.seed)


def heldout_examples(cfg: GuardModelConfig, limit: int | None = None) -> list[GuardExample]:
    """``limit`` held-out behaviours (each as a prompt, a compliant and a refused response) and
    as many held-out benign requests: half the examples unsafe, half safe."""
    from reasonlab.models.aligned_chat import advbench_split, benign_requests

    n = cfg.eval_limit if limit is None else limit
    held_b = advbench_split(cfg.heldout_fraction, cfg.split_seed)[1][:n]
    benign = benign_requests(len(held_b), heldout=True, heldout_fraction=cfg.heldout_fraction,
                             seed=20_000 + cfg.seed, split_seed=cfg.split_seed)
    return guard_examples(held_b, benign, seed=cfg.seed + 1)


def guard_accuracy(model_dir: str | Path, examples: list[GuardExample], *, batch_size: int = 32
                   ) -> dict[str, float]:
    """Greedy answers of the guard model on ``examples``: accuracy of the safe/unsafe verdict,
    of the category (on unsafe examples), the share of well-formed answers, and the agreement
    with the expected answers split by kind."""
    from reasonlab.evals.guard import LlamaGuardJudge
    from reasonlab.lm.local import LocalLM

    lm = LocalLM.from_pretrained(model_dir, device="cpu", batch_size=batch_size)
    verdicts = LlamaGuardJudge(lm).classify([e.messages for e in examples], max_new_tokens=6)
    ok = [v.is_unsafe == e.is_unsafe for v, e in zip(verdicts, examples)]
    unsafe = [(v, e) for v, e in zip(verdicts, examples) if e.is_unsafe]
    cat_ok = [v.categories == (e.answer.split("\n")[1],) for v, e in unsafe]

    def acc(sel) -> float:
        idx = [i for i, e in enumerate(examples) if sel(e)]
        return sum(ok[i] for i in idx) / max(1, len(idx))

    return {
        "accuracy": sum(ok) / max(1, len(ok)),
        "accuracy_prompt": acc(lambda e: len(e.conversation) == 1),
        "accuracy_response": acc(lambda e: len(e.conversation) == 2),
        "accuracy_unsafe": acc(lambda e: e.is_unsafe),
        "accuracy_safe": acc(lambda e: not e.is_unsafe),
        "category_accuracy": sum(cat_ok) / max(1, len(cat_ok)),
        "well_formed": sum(v.parsed for v in verdicts) / max(1, len(verdicts)),
        "n": len(examples),
    }


def build(cfg: GuardModelConfig, out_dir: str | Path) -> None:
    """Train the tokenizer and the guard model; write an HF model folder to ``out_dir`` (with
    ``guard_model.json``: training size, loss and held-out accuracy)."""
    from reasonlab.evals.guard import build_guard_prompt
    from reasonlab.llama.sft import SFTConfig, sft
    from reasonlab.llama.tokenizer import train_tokenizer
    from reasonlab.runs import atomic_write_json

    out_dir = Path(out_dir)
    examples = train_examples(cfg)
    prompts = [(build_guard_prompt(e.messages), e.answer) for e in examples]
    texts = [p.replace("<|", " ").replace("|>", " ") + "\n" + a for p, a in prompts[:2000]]
    tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size, digits="single")
    out_dir.mkdir(parents=True, exist_ok=True)
    sft_cfg = SFTConfig(preset=cfg.preset, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                        max_steps=cfg.max_steps, lr=cfg.lr, warmup_steps=min(30, cfg.max_steps // 10),
                        eval_every=10 ** 6, checkpoint_every=10 ** 6, log_every=50,
                        device="cpu", distributed="none", seed=cfg.seed)
    run_dir = out_dir / "_sft_run"
    res = sft(sft_cfg, tokenizer, prompts, run_dir)
    for f in (run_dir / "model").iterdir():
        shutil.copy2(f, out_dir / f.name)
    shutil.rmtree(run_dir)
    info = {"config": cfg.__dict__, "n_train_examples": len(examples),
            "train_loss": res.get("train_loss"), "n_params": res.get("n_params")}
    if cfg.eval_limit:
        info["heldout"] = guard_accuracy(out_dir, heldout_examples(cfg))
    atomic_write_json(out_dir / "guard_model.json", info)


GUARD_CONFIG = GuardModelConfig()
MICRO_GUARD_CONFIG = GuardModelConfig(vocab_size=400, n_benign=20, max_steps=3, batch_size=4,
                                      seq_len=384, eval_limit=0)


def _register() -> None:
    from reasonlab.models.recipes import Recipe, register

    register(Recipe(name="guard", config=GUARD_CONFIG, build=build, micro_config=MICRO_GUARD_CONFIG,
                    description="tiny safety classifier in the exact Llama Guard 3 format "
                                "(safe / unsafe + category)"))


_register()

"""A language-model environment for the learned optimizer: a pretrained herd model fine-tuned on a
SkillMath skill it was not trained on.

The herd solvers (:mod:`reasonlab.models.herd`) learned six skills (add, sub, mul, div, rem,
cmp). This environment fine-tunes one of them from the model cache on problems of another skill
(``max`` is not a SkillMath skill; the default is ``avg``, and ``skill`` may name any of the 13
outside the six) with the loss on the solution tokens only, as supervised fine-tuning does
(:func:`reasonlab.llama.sft.pair_document`). The test metrics are greedy accuracy on held-out
problems (graded by :func:`reasonlab.data.answers.check_answer`) and the held-out loss. A second
skill (``skill="perim"`` etc.) is the "unseen data set" of the generalization table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from reasonlab.config import ConfigError, check_choice, check_range

HERD_SIX = ("add", "sub", "mul", "div", "rem", "cmp")


@dataclass
class LMEnvConfig:
    model: str = "herd-xs"  # a model-cache recipe
    micro: bool = False  # the recipe's micro variant (tests)
    skill: str = "avg"
    n_train: int = 256
    n_val: int = 64
    n_test: int = 64
    batch_size: int = 8
    data_seed: int = 0
    max_new_tokens: int = 96
    k: int = 1  # skills per problem (1: the new skill alone)

    def __post_init__(self) -> None:
        from reasonlab.data.skillmath import skill_names

        check_choice("skill", self.skill, [s for s in skill_names() if s not in HERD_SIX])
        for name in ("n_train", "n_val", "n_test", "batch_size"):
            check_range(name, getattr(self, name), 1)
        check_range("max_new_tokens", self.max_new_tokens, 1)
        check_choice("k", self.k, [1, 2])
        if self.batch_size > self.n_train:
            raise ConfigError(f"config key 'batch_size' = {self.batch_size} exceeds "
                              f"'n_train' = {self.n_train}")


@functools.lru_cache(maxsize=4)
def _pretrained(model: str, micro: bool) -> tuple[dict[str, torch.Tensor], Any, Any]:
    """(state dict, HF config, tokenizer) of a cached model, loaded once per process."""
    from reasonlab.lm.checkpoint import load_causal_lm, load_tokenizer_from
    from reasonlab.models.cache import model_path

    path = model_path(model, micro=micro)
    m = load_causal_lm(path).float()
    tok = load_tokenizer_from(path)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}, m.config, tok


class LMEnv:
    """Fine-tune a cached herd model on a skill outside its six (see :class:`LMEnvConfig`)."""

    def __init__(self, config: LMEnvConfig | None = None):
        from reasonlab.data.skillmath import SkillMathConfig, sample_problems
        from reasonlab.llama.sft import pair_document

        self.config = cfg = config or LMEnvConfig()
        self.name = f"lm[{cfg.model}{'-micro' if cfg.micro else ''},{cfg.skill}]"
        self._state, self._hf_config, self.tokenizer = _pretrained(cfg.model, cfg.micro)
        sm = SkillMathConfig(max_number=30, max_answer=300, skills=[*HERD_SIX, cfg.skill],
                             solution_style="columns_all", heldout_pairs=[])
        n = cfg.n_train + cfg.n_val + cfg.n_test
        problems = sample_problems(sm, n, seed=f"l3rs-lm:{cfg.skill}:{cfg.data_seed}",
                                   skills=[cfg.skill] if cfg.k == 1 else sm.skills,
                                   k=cfg.k, avoid_pairs=[])
        if cfg.k == 2:  # keep chains that contain the new skill
            problems = [p for p in problems if cfg.skill in p.skills] or problems
        self.train = problems[:cfg.n_train]
        self.val = problems[cfg.n_train:cfg.n_train + cfg.n_val]
        self.test = problems[cfg.n_train + cfg.n_val:]
        enc = functools.partial(self._encode, pair_document)
        self._train_docs = [enc(p) for p in self.train]
        self._val_docs = [enc(p) for p in self.val]
        self._test_docs = [enc(p) for p in self.test]

    def _encode(self, pair_document: Any, p: Any) -> tuple[list[int], list[bool]]:
        from reasonlab.data.skillmath import format_prompt

        d = pair_document(self.tokenizer, format_prompt(p.question), p.solution)
        return d.ids, d.target_mask

    def make_model(self, seed: int) -> nn.Module:
        """The pretrained model (the same weights for every seed; the seed orders the data)."""
        from transformers import AutoModelForCausalLM

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(self._hf_config)
        model.load_state_dict(self._state)
        return model.float().train()

    def _collate(self, docs: list[tuple[list[int], list[bool]]]) -> dict[str, torch.Tensor]:
        T = max(len(ids) for ids, _ in docs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(docs), T), pad, dtype=torch.long)
        labels = torch.full((len(docs), T), -100, dtype=torch.long)
        att = torch.zeros((len(docs), T), dtype=torch.long)
        for i, (x, m) in enumerate(docs):
            ids[i, :len(x)] = torch.tensor(x)
            att[i, :len(x)] = 1
            labels[i, :len(x)] = torch.tensor([t if k else -100 for t, k in zip(x, m)])
        return {"input_ids": ids, "attention_mask": att, "labels": labels}

    def _stream(self, docs: list, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        bs, n = self.config.batch_size, len(docs)
        g = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(n, generator=g).tolist()
            for i in range(0, n - bs + 1, bs):
                yield self._collate([docs[j] for j in perm[i:i + bs]])

    def batches(self, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        return self._stream(self._train_docs, 104_729 * seed + 11)

    def val_batches(self, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        return self._stream(self._val_docs, 15_485_863 * seed + 29)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    @torch.no_grad()
    def test_loss(self, model: nn.Module) -> float:
        """Mean per-token loss on the solutions of the held-out test problems."""
        tot, n = 0.0, 0
        bs = 32
        for i in range(0, len(self._test_docs), bs):
            b = self._collate(self._test_docs[i:i + bs])
            k = int((b["labels"][:, 1:] != -100).sum())
            tot += float(model(**b).loss) * k
            n += k
        return tot / max(n, 1)

    @torch.no_grad()
    def test_accuracy(self, model: nn.Module) -> float:
        """Greedy accuracy on the held-out test problems (answers graded by check_answer)."""
        from reasonlab.data.answers import check_answer

        was = model.training
        model.eval()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        correct, bs = 0, 32
        for i in range(0, len(self.test), bs):
            probs = self.test[i:i + bs]
            prompts = [ids[:len(ids) - sum(m)] for ids, m in self._test_docs[i:i + bs]]
            T = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), T), pad, dtype=torch.long)
            att = torch.zeros_like(ids)
            for j, p in enumerate(prompts):  # left padding
                ids[j, T - len(p):] = torch.tensor(p)
                att[j, T - len(p):] = 1
            out = model.generate(input_ids=ids, attention_mask=att, do_sample=False,
                                 max_new_tokens=self.config.max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tok.eos_token_id)
            for p, row in zip(probs, out[:, T:]):
                text = tok.decode(row.tolist(), skip_special_tokens=True)
                correct += bool(check_answer(text, p.answer))
        model.train(was)
        return correct / len(self.test)

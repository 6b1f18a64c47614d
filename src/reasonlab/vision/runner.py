"""``reasonlab multimodal``: both stages of the compositional image adapter as one run.

Stage 1 trains the encoder (:mod:`reasonlab.vision.encoder`) and saves it as an HF folder
(``encoder/``); stage 2 assembles the Mllama model from the frozen solver (a model-cache recipe
or a model folder) and the encoder, trains the adapter (:mod:`reasonlab.vision.adapter`) and
saves it (``model/``, reloadable with ``MllamaForConditionalGeneration.from_pretrained``). Then
it measures, on held-out visual problems (unseen handwriting): the adapter's accuracy with the
image, the frozen solver's on the same problems as text (the ceiling), the combined model's with
no image (the floor), how often the first number written equals the pictured operand (reading),
and the maximum absolute difference of the text-only logits from the solver's. A finished stage
is not redone when the run is resumed.

Llama 3 paper, arXiv:2407.21783, §7.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasonlab.config import check_range
from reasonlab.data.skillmath import SkillMathConfig, generate
from reasonlab.vision.adapter import AdapterConfig
from reasonlab.vision.encoder import EncoderConfig


def _data_default() -> SkillMathConfig:
    # the herd's numbers and solution style, terse template, add/sub with 1-2 steps
    return SkillMathConfig(seed=0, n_train=2000, n_val=50, n_test=200, n_test_template=0,
                           n_test_pair=0, skills=["add", "sub"], k_weights=[0.7, 0.3, 0.0],
                           min_number=1, max_number=30, max_answer=300, templates=[0],
                           variants=[0], heldout_template=-1, heldout_pairs=[],
                           solution_style="columns_all")


@dataclass
class MultimodalConfig:
    solver: str = "herd-l"  # a model-cache recipe name (``reasonlab models list``) or a folder
    seed: int = 0
    threads: int = 1
    data: SkillMathConfig = field(default_factory=_data_default)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    eval_limit: int = 200
    max_new_tokens: int = 80

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, 256)
        check_range("eval_limit", self.eval_limit, 1, 100_000)
        check_range("max_new_tokens", self.max_new_tokens, 1, 4096)


def first_number(text: str) -> int | None:
    m = re.search(r"\d+", text)
    return int(m.group()) if m else None


def text_logit_diff(solver, model, tokenizer, prompts: list[str]) -> float:
    """Maximum absolute difference between the solver's logits and the combined model's on
    text-only prompts (each full prompt, every position)."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([tokenizer(p).input_ids])
            a = solver(input_ids=ids).logits
            b = model(input_ids=ids).logits
            worst = max(worst, float((a - b).abs().max()))
    return worst


def evaluate(lm, solver_lm, items, *, max_new_tokens: int) -> dict[str, Any]:
    """Accuracy with the image, as text on the frozen solver, and with no image; reading rate."""
    from reasonlab.data.answers import check_answer

    def grade(texts):
        return sum(check_answer(t, v.problem.answer) for t, v in zip(texts, items)) / len(items)

    def reads(texts):
        return sum(first_number(t) == v.number for t, v in zip(texts, items)) / len(items)

    vis = lm.complete([v.prompt for v in items], images=[v.image for v in items],
                      max_new_tokens=max_new_tokens)
    txt = solver_lm.complete([v.text_prompt for v in items], max_new_tokens=max_new_tokens)
    none = lm.complete([v.prompt for v in items], max_new_tokens=max_new_tokens)
    return {"n": len(items), "visual_accuracy": grade(vis), "text_ceiling_accuracy": grade(txt),
            "no_image_accuracy": grade(none), "visual_operand_read": reads(vis),
            "text_operand_read": reads(txt), "no_image_operand_read": reads(none),
            "examples": [{"question": v.question, "number": v.number, "answer": v.problem.answer,
                          "visual": a, "text": b, "no_image": c}
                         for v, a, b, c in list(zip(items, vis, txt, none))[:5]]}


def run_multimodal(cfg: MultimodalConfig, out: str | Path, *, progress: bool = True
                   ) -> dict[str, Any]:
    import dataclasses

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from reasonlab.lm.local import LocalLM
    from reasonlab.models.cache import resolve_model
    from reasonlab.runs import Run, seed_everything
    from reasonlab.vision.adapter import VisualLM, add_image_token, assemble, train_adapter
    from reasonlab.vision.data import visual_split
    from reasonlab.vision.encoder import (encoder_accuracy, load_encoder, save_encoder,
                                          train_encoder)

    torch.set_num_threads(cfg.threads)
    run = Run(out, cfg, cfg.seed, name="multimodal")
    done = run.finished("model")
    if done is not None:
        return done
    seed_everything(cfg.seed)
    solver_dir = resolve_model(cfg.solver)
    enc_dir, model_dir = run.path("encoder"), run.path("model")
    stage1 = run.path("encoder_stage.json")
    from reasonlab.runs import atomic_write_json, read_json

    enc_cfg = dataclasses.replace(cfg.encoder, seed=cfg.encoder.seed + cfg.seed)
    if stage1.exists() and (enc_dir / "config.json").exists():
        encoder, heads = load_encoder(enc_dir)
        s1 = read_json(stage1)
    else:
        encoder, heads, info = train_encoder(enc_cfg, progress=progress, log=run.log)
        save_encoder(encoder, heads, enc_dir)
        s1 = {"trainable_params": info["trainable_params"],
              "train_seconds": round(info["train_seconds"], 1),
              "final_loss": info["losses"][-1] if info["losses"] else None,
              "heldout_read_accuracy": encoder_accuracy(encoder, heads, seed=cfg.seed)}
        atomic_write_json(stage1, s1)

    tokenizer = AutoTokenizer.from_pretrained(solver_dir)
    add_image_token(tokenizer)
    solver = LlamaForCausalLM.from_pretrained(solver_dir).eval()
    model = assemble(solver, encoder, cfg.adapter.cross_attention_every)
    splits = generate(cfg.data)
    size = cfg.encoder.image_size
    train = visual_split(splits["train"], heldout=False, seed=f"{cfg.seed}:train", size=size)
    test = visual_split(splits["test"], heldout=True, seed=f"{cfg.seed}:test", size=size)
    test = test[:cfg.eval_limit]
    if not test:
        raise ValueError("no held-out visual problems; raise data.n_test")
    text_prompts = [v.text_prompt + v.problem.solution for v in test[:16]]
    diff_before = text_logit_diff(solver, model, tokenizer, text_prompts)
    acfg = dataclasses.replace(cfg.adapter, seed=cfg.adapter.seed + cfg.seed)
    s2 = train_adapter(model, tokenizer, train, acfg, progress=progress, log=run.log)
    VisualLM(model, tokenizer).save_pretrained(model_dir)
    lm = VisualLM.from_pretrained(model_dir)  # evaluate the reloaded model
    diff_after = text_logit_diff(solver, lm.model, lm.tokenizer, text_prompts)
    solver_lm = LocalLM.from_pretrained(solver_dir, device="cpu")
    ev = evaluate(lm, solver_lm, test, max_new_tokens=cfg.max_new_tokens)
    res = {**{k: v for k, v in ev.items() if k != "examples"},
           "text_logit_max_abs_diff": max(diff_before, diff_after),
           "text_logit_max_abs_diff_before_training": diff_before,
           "solver": str(cfg.solver), "seed": cfg.seed,
           "cross_attention_layers": list(model.config.text_config.cross_attention_layers),
           "encoder": s1,
           "adapter": {"trainable_params": s2["trainable_params"],
                       "train_seconds": round(s2["train_seconds"], 1),
                       "initial_loss": s2["losses"][0] if s2["losses"] else None,
                       "final_loss": s2["losses"][-1] if s2["losses"] else None,
                       "gates": s2["gates"]},
           "n_train": len(train), "examples": ev["examples"]}
    run.save_results(res)
    return res


def format_multimodal(res: dict[str, Any]) -> str:
    rows = [("with image (adapter)", res["visual_accuracy"], res["visual_operand_read"]),
            ("as text (frozen solver, ceiling)", res["text_ceiling_accuracy"],
             res["text_operand_read"]),
            ("no image (floor)", res["no_image_accuracy"], res["no_image_operand_read"])]
    lines = [f"{'held-out visual problems (n=' + str(res['n']) + ')':<36} accuracy  operand read"]
    lines += [f"{name:<36} {a:8.3f}  {r:12.3f}" for name, a, r in rows]
    lines.append(f"text-only max |logit diff| vs solver: {res['text_logit_max_abs_diff']:.3g}")
    lines.append(f"trainable params: encoder {res['encoder']['trainable_params']}, "
                 f"adapter {res['adapter']['trainable_params']}")
    return "\n".join(lines)

"""Pre-training a Llama 3 model from scratch on a text corpus (arXiv:2407.21783 §3).

``pretrain(cfg, tokenizer, train_texts, val_texts, out_dir)`` packs the documents, builds the
preset's ``LlamaForCausalLM``, trains it with :class:`reasonlab.llama.trainer.Trainer` and writes a
run directory whose ``model/`` folder is a plain HF checkpoint (safetensors + tokenizer).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from transformers import LlamaForCausalLM

from reasonlab.llama.configs import count_non_embedding, preset
from reasonlab.llama.packing import Document, PackedSequences, pack_documents
from reasonlab.llama.stages import Stage, check_stages
from reasonlab.llama.tokenizer import encode_document
from reasonlab.llama.trainer import TrainConfig, Trainer, TrainState
from reasonlab.runs import Run, seed_everything

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig(TrainConfig):
    """Pre-training: :class:`TrainConfig` with documents split across packed rows.

    ``stages`` (optional): ``[{seq_len, steps, data, lr_schedule, average_every}, ...]`` trained in
    order as one run (long-context extension, annealing; :mod:`reasonlab.llama.stages`). With
    stages, ``max_steps`` is their total and ``seq_len`` the longest stage's (the model's context).
    """

    stages: list[Stage] = field(default_factory=list)
    # Documents that fit in a row are never cut across two rows (the row is padded instead);
    # longer ones still are. Needed when a document's end depends on its start (passkeys).
    whole_documents: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages:
            check_stages(self.stages)
            self.max_steps = sum(s.steps for s in self.stages)
            self.seq_len = max(s.seq_len for s in self.stages)


def unigram_entropy(train: PackedSequences, val: PackedSequences) -> float:
    """Cross-entropy (nats/token) of the validation targets under the training unigram
    distribution (add-one smoothed) — the loss a model with no context would reach."""
    from reasonlab.llama.packing import loss_targets

    tt, tm = loss_targets(train)
    vt, vm = loss_targets(val)
    counts = Counter(tt[tm].tolist())
    total = sum(counts.values())
    vocab = max(int(train.input_ids.max()), int(val.input_ids.max())) + 1
    vals = vt[vm].tolist()
    return -sum(math.log((counts.get(v, 0) + 1) / (total + vocab)) for v in vals) / max(1, len(vals))


def build_model(cfg: TrainConfig, tokenizer) -> LlamaForCausalLM:
    """A fresh preset model sized to the tokenizer (seeded), or the ``init_from`` checkpoint."""
    if cfg.init_from:
        from reasonlab.lm.checkpoint import load_causal_lm

        return load_causal_lm(cfg.init_from)
    seed_everything(cfg.seed)
    config = preset(cfg.preset, vocab_size=len(tokenizer), max_position_embeddings=max(cfg.seq_len, 512),
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    if cfg.rope_theta is not None:
        config.rope_parameters["rope_theta"] = float(cfg.rope_theta)
    return LlamaForCausalLM(config)


def train_on_documents(cfg: TrainConfig, tokenizer, train_docs: Sequence[Document],
                       val_docs: Sequence[Document] | None, out_dir: str | Path, *,
                       split_documents: bool, on_step: Callable[[TrainState], None] | None = None,
                       name: str = "pretrain", run: Run | None = None, keep_whole: bool = False) -> dict:
    """Pack, train, save ``out_dir/model`` and ``results.json``; resumes from checkpoints.

    ``run``: the run directory already opened by the caller (a job records every section of its
    config there); by default one is opened on ``out_dir`` with ``cfg``. A finished run (results
    and model written) is left as it is and its results returned.
    """
    run = run if run is not None else Run(out_dir, cfg, cfg.seed, name=name)
    done = run.results()
    if done is not None and run.path("model/config.json").exists():
        log.info("run %s has already finished; nothing to do (results.json kept)", run.dir)
        return done
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train = pack_documents(train_docs, cfg.seq_len, pad, split_documents=split_documents,
                           keep_whole=keep_whole)
    val = (pack_documents(val_docs, cfg.seq_len, pad, split_documents=split_documents,
                          keep_whole=keep_whole) if val_docs else None)
    model = build_model(cfg, tokenizer)
    trainer = Trainer(cfg, model, train, val, run, on_step=on_step)
    out = trainer.fit()
    trainer.save_model(run.path("model"), tokenizer)
    results = {
        "val_loss": out.get("val_loss"),
        "train_loss": out.get("loss"),
        "steps": out["steps"],
        "train_tokens": out["tokens_seen"],
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_params_non_embedding": count_non_embedding(model),
        "n_train_sequences": len(train),
        "model_flops_per_s": out.get("model_flops_per_s"),
        "mfu": out.get("mfu"),
        "model_dir": "model",
    }
    if val is not None:
        results["unigram_entropy"] = unigram_entropy(train, val)
    if trainer.info.is_main:
        from reasonlab.plots import plot_metric_curves

        plot_metric_curves(run.metrics(), ["loss", "val_loss"], run.path("loss.png"), title=name)
        run.save_results(results)
    from reasonlab.llama import distributed as D

    D.cleanup(trainer.info)
    return results


def pretrain(cfg: PretrainConfig, tokenizer, train_texts: Sequence[str], val_texts: Sequence[str] | None,
             out_dir: str | Path, *, on_step: Callable[[TrainState], None] | None = None,
             run: Run | None = None, anneal_texts: Sequence[str] | None = None,
             long_texts: Sequence[str] | None = None) -> dict:
    """Pre-train a preset model on ``train_texts`` (one document each) and return the results.

    With ``cfg.stages`` the stages are trained as one run; ``anneal_texts`` are the documents of
    the stages whose data is ``anneal`` (the upsampled high-quality mix), ``long_texts`` those of
    the stages whose data is ``long`` (the long-context mix)."""
    if not train_texts:
        raise ValueError("pretrain: the training corpus is empty")
    train_docs = [Document(encode_document(tokenizer, t)) for t in train_texts]
    val_docs = [Document(encode_document(tokenizer, t)) for t in val_texts] if val_texts else None
    if cfg.stages:
        from reasonlab.llama.stages import train_stages

        extra = {"anneal": anneal_texts, "long": long_texts}
        for name, texts in extra.items():
            if any(s.data == name for s in cfg.stages) and not texts:
                what = {"anneal": "annealing", "long": "long-context"}[name]
                raise ValueError(f"pretrain: a stage reads data {name!r} but no {what} documents "
                                 f"were given ({name}_texts)")
        docs = {k: [Document(encode_document(tokenizer, t)) for t in v] if v else None
                for k, v in extra.items()}
        return train_stages(cfg, tokenizer, train_docs, val_docs, out_dir, anneal_docs=docs["anneal"],
                            long_docs=docs["long"],
                            on_step=on_step, run=run)
    if anneal_texts or long_texts:
        raise ValueError("pretrain: annealing or long-context documents were given but no stages "
                         "read them (config key 'stages' is empty)")
    return train_on_documents(cfg, tokenizer, train_docs, val_docs, out_dir, split_documents=True,
                              on_step=on_step, name="pretrain", run=run,
                              keep_whole=cfg.whole_documents)

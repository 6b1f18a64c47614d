"""Pre-training in stages of one run: long-context extension and annealing (arXiv:2407.21783 §3.4).

Llama 3 pre-trains at a short context, then grows the sequence length in stages (§3.4.2), and
ends with an annealing stage: the learning rate decayed linearly to zero on an upsampled
high-quality mix, the checkpoints of that stage averaged (Polyak averaging, §3.4.3).

A :class:`Stage` is ``(seq_len, steps)`` plus its data (``main``; ``long``, a mix that upsamples
long documents for the extension stages; ``anneal``), its learning-rate
schedule and how often its weights are snapshotted for averaging. The run is one run: one
optimizer, one global step, one checkpoint series. The documents of each data stream are read in
a seeded per-epoch order (:class:`DocumentStream`), and each stage packs (with document masks) at
its own length from where the previous stage of that stream stopped, so the data order is carried
across stages. The stream positions and the stage live in the checkpoint's ``state.json``, so a run
killed inside any stage resumes to the same weights. RoPE theta stays the preset's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from reasonlab.config import ConfigError, check_choice, check_order, check_range
from reasonlab.llama.packing import Document, PackedSequences, pack_documents

log = logging.getLogger(__name__)

STAGE_DATA = ("main", "long", "anneal")
LR_SCHEDULES = ("main", "linear_to_zero")
SNAPSHOT_DIR = "anneal_snapshots"


@dataclass
class Stage:
    """One stage: ``steps`` optimizer steps on rows of ``seq_len`` tokens from stream ``data``.

    ``lr_schedule``: ``main`` follows the run's warmup + cosine over all stages; ``linear_to_zero``
    starts from the main schedule's value at the stage's first step and decays linearly to 0 at
    its end (annealing). ``average_every``: keep the weights every this many steps of the stage
    (and at its end) and average them into ``model_averaged/`` (0 = no averaging);
    ``average_from``: keep none before this many steps into the stage (averaging only the tail of
    the decay, where the weights have stopped moving far)."""

    seq_len: int = 256
    steps: int = 100
    data: str = "main"
    lr_schedule: str = "main"
    average_every: int = 0
    average_from: int = 0

    def __post_init__(self) -> None:
        check_range("stages[].seq_len", self.seq_len, 2, 1 << 20)
        check_range("stages[].steps", self.steps, 1)
        check_choice("stages[].data", self.data, STAGE_DATA)
        check_choice("stages[].lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range("stages[].average_every", self.average_every, 0)
        check_range("stages[].average_from", self.average_from, 0)
        check_order("stages[].average_from", self.average_from, "stages[].steps", self.steps,
                    strict=True)


def check_stages(stages: Sequence[Stage]) -> None:
    """At most one averaged stage (its average is the run's ``model_averaged``)."""
    if sum(1 for s in stages if s.average_every) > 1:
        raise ConfigError("config key 'stages': average_every is set on more than one stage; "
                          "the checkpoints of one (annealing) stage are averaged")


def stage_bounds(stages: Sequence[Stage]) -> list[tuple[int, int]]:
    """``[start, end)`` global steps of each stage."""
    out, at = [], 0
    for s in stages:
        out.append((at, at + s.steps))
        at += s.steps
    return out


def stage_of(stages: Sequence[Stage], step: int) -> int:
    """Index of the stage that trains global step ``step`` (0-based; the last one past the end)."""
    for i, (_, end) in enumerate(stage_bounds(stages)):
        if step < end:
            return i
    return len(stages) - 1


def stage_lr(stages: Sequence[Stage], step: int, main_lr: Callable[[int], float]) -> float:
    """The learning rate of global ``step`` under the stages' schedules (see :class:`Stage`)."""
    k = stage_of(stages, step)
    start, end = stage_bounds(stages)[k]
    if stages[k].lr_schedule == "linear_to_zero":
        return main_lr(start) * (end - step) / (end - start)
    return main_lr(step)


class DocumentStream:
    """An endless stream of tokens: the documents in a fresh seeded order every epoch."""

    def __init__(self, docs: Sequence[Document], seed: int):
        self.docs = [d for d in docs if d.ids]
        if not self.docs:
            raise ValueError("document stream: no non-empty documents")
        self.seed = seed
        self.epoch_tokens = sum(len(d.ids) for d in self.docs)

    def _order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * epoch + 1)
        return torch.randperm(len(self.docs), generator=g).tolist()

    def documents(self, start: int, n_tokens: int) -> list[Document]:
        """Documents covering tokens ``start .. start + n_tokens`` of the stream (the first one cut
        where ``start`` falls inside it)."""
        epoch, skip = divmod(start, self.epoch_tokens)
        out: list[Document] = []
        got = 0
        while got < n_tokens:
            for i in self._order(epoch):
                d = self.docs[i]
                if skip >= len(d.ids):
                    skip -= len(d.ids)
                    continue
                ids = d.ids[skip:]
                mask = d.target_mask[skip:] if d.target_mask is not None else None
                skip = 0
                out.append(Document(ids, mask))
                got += len(ids)
                if got >= n_tokens:
                    break
            epoch += 1
        return out

    def pack(self, start: int, rows: int, seq_len: int, pad_id: int, *,
             keep_whole: bool = False) -> PackedSequences:
        """At least ``rows + 1`` rows of ``seq_len`` tokens from token ``start``: full rows, or
        with ``keep_whole`` rows padded where the next document would be cut
        (:func:`reasonlab.llama.packing.pack_documents`)."""
        n_tokens = (rows + 1) * seq_len
        while True:
            packed = pack_documents(self.documents(start, n_tokens), seq_len, pad_id,
                                    split_documents=True, keep_whole=keep_whole)
            if len(packed) > rows:
                return packed
            n_tokens *= 2


def stream_tokens(packed: PackedSequences, rows: int) -> int:
    """Stream tokens in the first ``rows`` rows of a block (padding excluded): how far the stream
    moved when those rows were trained on."""
    return int((packed.doc_ids[:rows] >= 0).sum())


def make_staged_trainer(cfg, model, streams: dict[str, DocumentStream], val_docs, run, *, pad_id: int,
                        on_step=None):
    """A :class:`reasonlab.llama.trainer.Trainer` that trains ``cfg.stages`` in order."""
    from reasonlab.llama import distributed as D
    from reasonlab.llama.trainer import Trainer, model_flops_per_token

    class StagedTrainer(Trainer):
        """Rows are read in order from the current stage's packed block (the documents are already
        in the stream's seeded order); the block is rebuilt at each stage and after a resume."""

        def __init__(self):
            super().__init__(cfg, model, None, None, run, on_step=on_step)
            self.active: int | None = None
            self.max_batch = max([cfg.batch_size] + [r[1] for r in cfg.batch_ramp])

        def prepare_step(self) -> None:
            stages, st = cfg.stages, self.state
            k = stage_of(stages, st.step)
            while st.stage < k:  # the previous stage is over: its stream moves on
                prev = stages[st.stage]
                st.streams[prev.data] = int(st.streams.get(prev.data, 0)) + self.stage_tokens()
                st.cursor = 0
                st.stage += 1
                self.active = None
            if self.active == k:
                return
            stage = stages[k]
            self.train_data = self.block(k)
            start = int(st.streams.get(stage.data, 0))
            self.val_data = (pack_documents(val_docs, stage.seq_len, pad_id, split_documents=True)
                             if val_docs else None)
            self.flops_per_token = model_flops_per_token(self.raw_model, stage.seq_len)
            self.active = k
            log.info("stage %d: seq_len %d, %d steps, data %s from token %d", k, stage.seq_len,
                     stage.steps, stage.data, start)
            if self.run is not None and self.info.is_main and st.step == stage_bounds(stages)[k][0]:
                self.run.log(step=st.step, stage=k, stage_seq_len=stage.seq_len, stage_data=stage.data)

        def block(self, k: int) -> PackedSequences:
            """The packed rows of stage ``k``, from where its stream stands."""
            stage = cfg.stages[k]
            if stage.data not in streams:
                raise ValueError(f"stage {k} reads data {stage.data!r} but no such documents were given")
            return streams[stage.data].pack(int(self.state.streams.get(stage.data, 0)),
                                            stage.steps * self.max_batch, stage.seq_len, pad_id,
                                            keep_whole=cfg.whole_documents)

        def stage_tokens(self) -> int:
            """Stream tokens the current stage's trained rows held (its block is rebuilt when the
            run resumed at the stage's end)."""
            if self.active != self.state.stage:
                self.train_data = self.block(self.state.stage)
                self.active = self.state.stage
            return stream_tokens(self.train_data, self.state.cursor)

        def batch_indices(self, batch_size: int) -> list[int]:
            c = self.state.cursor
            if c + batch_size > len(self.train_data):
                raise RuntimeError(f"stage block exhausted at row {c} of {len(self.train_data)}")
            return list(range(c, c + batch_size))

        def lr_at(self, step: int) -> float:
            return stage_lr(cfg.stages, step, super().lr_at)

        def after_step(self) -> None:
            stages, step = cfg.stages, self.state.step
            k = stage_of(stages, step - 1)
            stage = stages[k]
            start, end = stage_bounds(stages)[k]
            if not stage.average_every or step - start < stage.average_from or not (
                    (step - start) % stage.average_every == 0 or step == end):
                return
            sd = D.full_model_state(self.model)
            if self.info.is_main and self.run is not None:
                save_snapshot(sd, self.run.path(SNAPSHOT_DIR), step)
            D.barrier(self.info)

    return StagedTrainer()


def final_stream_tokens(trainer, stages: Sequence[Stage]) -> dict[str, int]:
    """Tokens each stream gave the whole run: the positions reached before the last stage plus
    what the last stage's trained rows held."""
    out = {k: int(v) for k, v in trainer.state.streams.items()}
    k = len(stages) - 1
    if trainer.state.stage == k:
        out[stages[k].data] = out.get(stages[k].data, 0) + trainer.stage_tokens()
    return out


def save_snapshot(state_dict: dict, folder: Path, step: int) -> Path:
    """Write the weights of ``step`` as ``folder/step_NNNNNNN.safetensors`` atomically."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:07d}.safetensors"
    tmp = folder / f".tmp_step_{step:07d}.safetensors"
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    tmp.replace(final)
    return final


def snapshots(folder: Path, start: int, end: int) -> list[Path]:
    """The snapshots of steps in ``(start, end]``, in step order."""
    found = sorted(folder.glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    return [p for p in found if start < int(p.stem.split("_")[1]) <= end]


def train_stages(cfg, tokenizer, train_docs: Sequence[Document], val_docs: Sequence[Document] | None,
                 out_dir, *, anneal_docs: Sequence[Document] | None = None,
                 long_docs: Sequence[Document] | None = None, on_step=None,
                 run=None) -> dict:
    """Train ``cfg.stages`` as one run into ``out_dir``: ``model/`` is the final model and, when a
    stage sets ``average_every``, ``model_averaged/`` the average of that stage's snapshots."""
    from reasonlab.llama import distributed as D
    from reasonlab.llama.configs import count_non_embedding
    from reasonlab.llama.pretrain import build_model, unigram_entropy
    from reasonlab.llama.trainer import evaluate
    from reasonlab.runs import Run
    from reasonlab.training.averaging import average_models

    run = run if run is not None else Run(out_dir, cfg, cfg.seed, name="pretrain")
    done = run.results()
    if done is not None and run.path("model/config.json").exists():
        log.info("run %s has already finished; nothing to do (results.json kept)", run.dir)
        return done
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    streams = {"main": DocumentStream(train_docs, cfg.seed)}
    if anneal_docs:
        streams["anneal"] = DocumentStream(anneal_docs, cfg.seed + 1)
    if long_docs:
        streams["long"] = DocumentStream(long_docs, cfg.seed + 2)
    model = build_model(cfg, tokenizer)
    trainer = make_staged_trainer(cfg, model, streams, list(val_docs) if val_docs else None, run,
                                  pad_id=pad, on_step=on_step)
    out = trainer.fit()
    trainer.save_model(run.path("model"), tokenizer)
    last = cfg.stages[-1]
    results = {
        "val_loss": out.get("val_loss"),
        "train_loss": out.get("loss"),
        "steps": out["steps"],
        "train_tokens": out["tokens_seen"],
        "stages": [{"seq_len": s.seq_len, "steps": s.steps, "data": s.data,
                    "lr_schedule": s.lr_schedule, "average_every": s.average_every,
                    "average_from": s.average_from}
                   for s in cfg.stages],
        "stream_tokens": final_stream_tokens(trainer, cfg.stages),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_params_non_embedding": count_non_embedding(model),
        "model_flops_per_s": out.get("model_flops_per_s"),
        "mfu": out.get("mfu"),
        "model_dir": "model",
    }
    averaged = [(k, s) for k, s in enumerate(cfg.stages) if s.average_every]
    if averaged and trainer.info.is_main:
        k, _ = averaged[0]
        start, end = stage_bounds(cfg.stages)[k]
        snaps = snapshots(run.path(SNAPSHOT_DIR), start, end)
        average_models(snaps, run.path("model_averaged"), base=run.path("model"))
        results["averaged_dir"] = "model_averaged"
        results["averaged_snapshots"] = len(snaps)
        if val_docs:
            from safetensors.torch import load_file

            val = pack_documents(val_docs, last.seq_len, pad, split_documents=True)
            micro = cfg.micro_batch_size or cfg.batch_size
            state = load_file(str(run.path("model_averaged") / "model.safetensors"))
            trainer.raw_model.load_state_dict(state, strict=False)
            results["averaged_val_loss"] = evaluate(trainer.raw_model, val, trainer.device, micro,
                                                    cfg.eval_batches, cfg.precision)
    if val_docs:
        t = pack_documents(train_docs, last.seq_len, pad, split_documents=True)
        v = pack_documents(val_docs, last.seq_len, pad, split_documents=True)
        results["unigram_entropy"] = unigram_entropy(t, v)
    if trainer.info.is_main:
        from reasonlab.plots import plot_metric_curves

        plot_metric_curves(run.metrics(), ["loss", "val_loss"], run.path("loss.png"), title="stages")
        run.save_results(results)
    D.cleanup(trainer.info)
    return results

"""Pre-training in stages (long-context extension, annealing): the data order is carried across
stages, a run killed inside any stage resumes to identical weights, the annealing stage decays the
learning rate linearly to zero and its snapshots are averaged."""

import json

import pytest
import torch
from safetensors.torch import load_file

from reasonlab.config import ConfigError, from_dict
from reasonlab.data.skillmath import SkillMathConfig, pretraining_texts, sample_problems
from reasonlab.llama.packing import Document
from reasonlab.llama.pretrain import PretrainConfig, pretrain
from reasonlab.llama.stages import DocumentStream, Stage, stage_lr
from reasonlab.llama.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    texts = list(pretraining_texts(sample_problems(SkillMathConfig(), 300, seed=5, k=1)))
    tok = train_tokenizer(texts[:100], vocab_size=272)  # one character per token
    return tok, texts[:260], texts[260:]


def _cfg(stages, **kw):
    base = dict(preset="micro-0.06m", batch_size=4, warmup_steps=2, eval_every=100, eval_batches=1,
                checkpoint_every=3, log_every=1, lr=3e-3, seed=1, device="cpu",
                stages=[Stage(**s) for s in stages])
    base.update(kw)
    return PretrainConfig(**base)


STAGES = [dict(seq_len=32, steps=4), dict(seq_len=64, steps=5)]


def test_document_stream_continues_where_the_last_stage_stopped():
    docs = [Document(list(range(100 * i, 100 * i + n))) for i, n in enumerate([5, 9, 3, 12, 7])]
    s = DocumentStream(docs, seed=4)
    flat = [t for d in s.documents(0, 3 * s.epoch_tokens) for t in d.ids]
    for start, n in [(0, 10), (7, 20), (30, 40), (36, 5)]:  # 36 = one epoch: a new order begins
        got = [t for d in s.documents(start, n) for t in d.ids]
        assert got[:n] == flat[start:start + n]
    assert flat[:36] != flat[36:72] and sorted(flat[:36]) == sorted(flat[36:72])
    packed = s.pack(10, 3, 8, pad_id=0)
    assert packed.input_ids[:3].flatten().tolist() == flat[10:34]
    # document ids (and so the masks) restart at document boundaries inside the packed rows
    assert (packed.doc_ids[:3] >= 0).all()


def test_stage_config_is_validated_and_sets_the_run_length():
    cfg = from_dict(PretrainConfig, {"preset": "micro-0.06m", "stages": STAGES})
    assert cfg.max_steps == 9 and cfg.seq_len == 64 and isinstance(cfg.stages[1], Stage)
    with pytest.raises(ConfigError, match="stages\\[\\].data"):
        from_dict(PretrainConfig, {"stages": [{"seq_len": 32, "steps": 2, "data": "web"}]})
    with pytest.raises(ConfigError, match="stages\\[\\].seq_len"):
        from_dict(PretrainConfig, {"stages": [{"seq_len": 1, "steps": 2}]})
    with pytest.raises(ConfigError, match="lr_schedule"):
        Stage(lr_schedule="cosine")


def test_linear_to_zero_anneal_schedule():
    stages = [Stage(32, 6), Stage(32, 4, data="anneal", lr_schedule="linear_to_zero")]
    main = lambda s: 1.0 - 0.05 * s  # noqa: E731
    lrs = [stage_lr(stages, s, main) for s in range(10)]
    assert lrs[:6] == [main(s) for s in range(6)]
    assert lrs[6:] == pytest.approx([main(6) * f for f in (1.0, 0.75, 0.5, 0.25)])


def test_decay_steps_end_the_cosine_at_the_base_stage_and_extension_holds_the_floor(corpus, tmp_path):
    tok, train, val = corpus
    stages = [dict(seq_len=32, steps=6), dict(seq_len=64, steps=3)]
    pretrain(_cfg(stages, decay_steps=6, log_every=1), tok, train, val, tmp_path / "d")
    metrics = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    lrs = {m["step"]: m["lr"] for m in metrics if "lr" in m}
    floor = 0.1 * 3e-3  # min_lr_ratio x peak
    # metrics step k logs the LR of 0-based step k - 1: the cosine reaches its floor at step 6,
    # the first step of the extension stage, which holds it
    assert lrs[4] > lrs[5] > lrs[6] > floor
    assert [lrs[s] for s in (7, 8, 9)] == pytest.approx([floor] * 3)
    with pytest.raises(ConfigError, match="decay_steps"):
        _cfg(stages, decay_steps=1)  # before the warmup ends
    with pytest.raises(ConfigError, match="decay_steps"):
        _cfg(stages, decay_steps=-1)


@pytest.mark.parametrize("kill_at", [5, 8])  # resume from the step-3 (stage 1) / step-6 (stage 2) checkpoint
def test_killed_staged_run_resumes_to_identical_weights(corpus, tmp_path, kill_at):
    tok, train, val = corpus
    full = pretrain(_cfg(STAGES), tok, train, val, tmp_path / "full")
    assert full["steps"] == 9

    class Killed(Exception):
        pass

    def kill(state):
        if state.step == kill_at:
            raise Killed

    with pytest.raises(Killed):
        pretrain(_cfg(STAGES), tok, train, val, tmp_path / "resumed", on_step=kill)
    res = pretrain(_cfg(STAGES), tok, train, val, tmp_path / "resumed")
    assert res["steps"] == 9 and res["stream_tokens"] == full["stream_tokens"]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the stages consumed 4 steps x 4 rows x 32 tokens, then 5 x 4 x 64, of the main stream
    assert full["stream_tokens"] == {"main": 4 * 4 * 32 + 5 * 4 * 64}
    cfg = json.loads((tmp_path / "full" / "model" / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_theta"] == 500000.0  # theta stays the preset's
    metrics = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage_seq_len"] for m in metrics if "stage" in m] == [32, 64]


def test_whole_documents_stages_keep_documents_whole_and_resume_exactly(corpus, tmp_path):
    """With padded rows the stream moves by the tokens the trained rows held, not rows x length;
    a run killed at a stage boundary and resumed still ends with the same weights and stream."""
    tok, train, val = corpus
    stages = [dict(seq_len=128, steps=3), dict(seq_len=160, steps=4)]  # documents: 48-111 tokens
    full = pretrain(_cfg(stages, whole_documents=True), tok, train, val, tmp_path / "full")
    cut = pretrain(_cfg(stages), tok, train, val, tmp_path / "cut")
    assert cut["stream_tokens"] == {"main": 3 * 4 * 128 + 4 * 4 * 160}
    assert 0 < full["stream_tokens"]["main"] < 3 * 4 * 128 + 4 * 4 * 160  # padding: fewer tokens

    class Killed(Exception):
        pass

    def kill(state):
        if state.step == 3:  # checkpoint_every=3: the last checkpoint is at the stage's end
            raise Killed

    with pytest.raises(Killed):
        pretrain(_cfg(stages, whole_documents=True), tok, train, val, tmp_path / "resumed",
                 on_step=kill)
    res = pretrain(_cfg(stages, whole_documents=True), tok, train, val, tmp_path / "resumed")
    assert res["stream_tokens"] == full["stream_tokens"]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_document_stream_pack_keep_whole_never_cuts_a_short_document():
    docs = [Document(list(range(100 * i, 100 * i + n))) for i, n in enumerate([5, 9, 3, 12, 7])]
    s = DocumentStream(docs, seed=4)
    packed = s.pack(0, 6, 10, pad_id=-5, keep_whole=True)
    assert len(packed) > 6
    rows = packed.doc_ids.tolist()
    ids = packed.input_ids.tolist()
    for r, (row_docs, row_ids) in enumerate(zip(rows, ids)):
        for i, d in enumerate(row_docs):
            if d >= 0 and i == 0 and r > 0 and rows[r - 1][-1] == d:
                # only the 12-token document (longer than a row) continues from the row before
                assert row_ids[i] // 100 == 3


def test_annealing_stage_decays_to_zero_and_averages_its_snapshots(corpus, tmp_path):
    tok, train, val = corpus
    anneal = ["Q: 1 + 2?\nA: 1 + 2 = 3. The answer is 3."] * 20
    stages = [dict(seq_len=32, steps=4),
              dict(seq_len=32, steps=4, data="anneal", lr_schedule="linear_to_zero", average_every=2)]
    res = pretrain(_cfg(stages, checkpoint_every=4), tok, train, val, tmp_path / "a", anneal_texts=anneal)
    metrics = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lrs = {m["step"]: m["lr"] for m in metrics if "lr" in m}
    assert lrs[8] == pytest.approx(lrs[5] / 4) and lrs[5] > lrs[6] > lrs[7] > lrs[8] > 0
    snaps = sorted((tmp_path / "a" / "anneal_snapshots").glob("step_*.safetensors"))
    assert [p.name for p in snaps] == ["step_0000006.safetensors", "step_0000008.safetensors"]
    assert res["averaged_snapshots"] == 2 and res["averaged_val_loss"] > 0
    s6, s8 = (load_file(str(p)) for p in snaps)
    avg = load_file(str(tmp_path / "a" / "model_averaged" / "model.safetensors"))
    for k in avg:
        torch.testing.assert_close(avg[k], (s6[k].double() + s8[k].double()).div(2).float())
    assert torch.equal(s8["model.norm.weight"], load_file(str(tmp_path / "a" / "model" / "model.safetensors"))["model.norm.weight"])
    from transformers import AutoModelForCausalLM

    from reasonlab.lm.checkpoint import load_causal_lm

    AutoModelForCausalLM.from_pretrained(str(tmp_path / "a" / "model_averaged"))
    load_causal_lm(tmp_path / "a" / "model_averaged")  # its manifest matches the averaged weights
    with pytest.raises(ValueError, match="no annealing documents"):
        pretrain(_cfg(stages), tok, train, val, tmp_path / "b")


def test_average_from_keeps_only_the_tail_of_the_annealing_stage(corpus, tmp_path):
    tok, train, val = corpus
    anneal = ["Q: 1 + 2?\nA: 1 + 2 = 3. The answer is 3."] * 20
    stages = [dict(seq_len=32, steps=2),
              dict(seq_len=32, steps=6, data="anneal", lr_schedule="linear_to_zero",
                   average_every=1, average_from=3)]
    res = pretrain(_cfg(stages, checkpoint_every=100), tok, train, val, tmp_path / "a",
                   anneal_texts=anneal)
    snaps = sorted(p.name for p in (tmp_path / "a" / "anneal_snapshots").glob("step_*.safetensors"))
    assert snaps == [f"step_{s:07d}.safetensors" for s in (5, 6, 7, 8)]  # steps 3..6 of the stage
    assert res["averaged_snapshots"] == 4
    with pytest.raises(ConfigError, match="average_from"):
        Stage(steps=4, average_every=1, average_from=4)

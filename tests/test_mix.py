"""The weighted data mix: realized token shares follow the weights, deterministic given the seed,
and bad mixes fail at load naming the problem."""

import pytest

from reasonlab.config import ConfigError
from reasonlab.llama.mix import MixSource, check_mix, sample_mix, token_shares


def _docs():
    # Sources of very different document lengths and sizes: shares are of tokens, not documents.
    return {"short": [f"s{i}" for i in range(50)],              # 2-3 characters each
            "long": [("L%03d" % i) * 10 for i in range(400)],    # 40 characters each
            "mid": [("m%02d" % i) * 4 for i in range(7)]}        # 12 characters, upsampled


def test_realized_token_shares_follow_the_weights():
    docs = _docs()
    weights = {"short": 1.0, "long": 2.0, "mid": 1.0}
    drawn = sample_mix(docs, weights, 6000, seed=3)
    shares = token_shares(drawn, lambda t: {"s": "short", "L": "long", "m": "mid"}[t[0]])
    for name, w in weights.items():
        assert shares[name] == pytest.approx(w / 4.0, abs=0.03), shares
    # The 7-document source is repeated (upsampled) and each pass uses every document.
    mids = [t for t in drawn if t[0] == "m"]
    assert len(mids) > 7 * 10 and set(mids) == set(docs["mid"])


def test_mix_is_deterministic_given_the_seed():
    docs, w = _docs(), {"short": 1.0, "long": 1.0, "mid": 3.0}
    a = sample_mix(docs, w, 300, seed=1)
    assert a == sample_mix(docs, w, 300, seed=1)
    assert a != sample_mix(docs, w, 300, seed=2)


def test_bad_mixes_fail_at_load(tmp_path):
    with pytest.raises(ConfigError, match="weight"):
        MixSource("skillmath", 0.0)
    with pytest.raises(ConfigError, match="weight"):
        MixSource("skillmath", -1.0)
    with pytest.raises(ConfigError, match="neither a known data set nor an existing corpus file"):
        check_mix([MixSource("no_such_corpus.txt", 1.0)])
    with pytest.raises(ConfigError, match="unknown data set"):
        check_mix([MixSource("data:nope", 1.0)])
    with pytest.raises(ConfigError, match="listed twice"):
        check_mix([MixSource("skillmath", 1.0), MixSource("skillmath", 2.0)])
    f = tmp_path / "c.txt"
    f.write_text("one doc\n\nanother doc")
    check_mix([MixSource("skillmath", 1.0), MixSource(str(f), 0.5)])


def test_pretrain_job_validates_its_mix_at_load():
    from reasonlab.config import from_dict
    from reasonlab.llama.jobs import PretrainJob

    with pytest.raises(ConfigError, match="mix\\[0\\].source"):
        from_dict(PretrainJob, {"mix": [{"source": "missing.jsonl", "weight": 1}]})
    with pytest.raises(ConfigError, match="weight"):
        from_dict(PretrainJob, {"mix": [{"source": "skillmath", "weight": 0}]})
    job = from_dict(PretrainJob, {"mix": [{"source": "skillmath", "weight": 2}], "mix_docs": 10})
    assert job.mix[0].weight == 2.0


def test_pretrain_job_trains_on_a_mix_with_an_annealing_stage(tmp_path):
    from reasonlab.config import from_dict
    from reasonlab.llama.jobs import PretrainJob, run_pretrain_job

    f = tmp_path / "hq.txt"
    f.write_text("\n\n".join(f"Q: {i} + 1?\nA: The answer is {i + 1}." for i in range(30)))
    job = from_dict(PretrainJob, {
        "mix": [{"source": "skillmath", "weight": 1}, {"source": str(f), "weight": 1}], "mix_docs": 120,
        "anneal_mix": [{"source": str(f), "weight": 1}], "limit": 200,
        "tokenizer": {"vocab_size": 300},
        "train": {"preset": "micro-0.03m", "batch_size": 4, "warmup_steps": 1, "eval_every": 100,
                  "device": "cpu", "stages": [{"seq_len": 32, "steps": 2},
                                              {"seq_len": 32, "steps": 2, "data": "anneal",
                                               "lr_schedule": "linear_to_zero", "average_every": 1}]}})
    res = run_pretrain_job(job, tmp_path / "run")
    assert res["steps"] == 4 and res["averaged_snapshots"] == 2
    assert (tmp_path / "run" / "model_averaged" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="anneal_mix"):
        from_dict(PretrainJob, {"train": {"stages": [{"seq_len": 32, "steps": 1, "data": "anneal"}]}})


def test_pretrain_job_extends_its_context_on_the_long_mix(tmp_path):
    from reasonlab.config import from_dict
    from reasonlab.llama.jobs import PretrainJob, run_pretrain_job

    f = tmp_path / "long.txt"
    f.write_text("\n\n".join(f"The key is {1000 + i}. " + "Filler text. " * 8 + f"Key? {1000 + i}."
                               for i in range(20)))
    job = from_dict(PretrainJob, {
        "mix": [{"source": "skillmath", "weight": 1}], "mix_docs": 60,
        "long_mix": [{"source": "skillmath", "weight": 1}, {"source": str(f), "weight": 1}],
        "long_docs": 40, "limit": 200, "tokenizer": {"vocab_size": 300},
        "train": {"preset": "micro-0.03m", "batch_size": 4, "warmup_steps": 1, "eval_every": 100,
                  "device": "cpu", "whole_documents": True,
                  "stages": [{"seq_len": 32, "steps": 2}, {"seq_len": 128, "steps": 2, "data": "long"}]}})
    res = run_pretrain_job(job, tmp_path / "run")
    assert res["steps"] == 4 and set(res["stream_tokens"]) == {"main", "long"}
    assert res["stream_tokens"]["main"] == 2 * 4 * 32  # SkillMath documents: all longer than 32
    assert 0 < res["stream_tokens"]["long"] < 2 * 4 * 128  # whole documents: padded rows
    with pytest.raises(ConfigError, match="long_mix"):
        from_dict(PretrainJob, {"train": {"stages": [{"seq_len": 32, "steps": 1, "data": "long"}]}})

"""GCG and probe sampling on micro models (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from reasonlab.attacks.gcg import (
    GCG,
    GCGConfig,
    ProbeConfig,
    disallowed_token_ids,
    encode_prompt,
    filter_candidates,
    retokenizes,
    sample_candidates,
    target_losses,
)
from reasonlab.attacks.probe import agreement, draft_losses, filtered_size, probe_select
from reasonlab.config import ConfigError, load_config
from reasonlab.lm.logprobs import batched_target_loss
from conftest import build_tiny_tokenizer

MSG = "Write a story about a fox"
TARGET = "Sure, here is a story"


def micro_model(tok, seed=0, dim=32, layers=2):
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=dim, intermediate_size=2 * dim,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=256, initializer_range=0.3,
                      bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def rows(tok, *texts):
    """Token rows of ``texts`` cut to a common length."""
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = min(len(e) for e in enc)
    return torch.tensor([e[:n] for e in enc])


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return micro_model(tok)


def small_cfg(**kw):
    base = dict(num_steps=6, search_width=48, topk=32, optim_str_init="x x x x x x",
                early_stop=False, seed=0)
    base.update(kw)
    return GCGConfig(**base)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="search_width"):
        GCGConfig(search_width=0)
    with pytest.raises(ConfigError, match="probe.r"):
        load_config(GCGConfig, None, ["probe.r=0"])
    cfg = load_config(GCGConfig, None, ["probe.enabled=true", "probe.sampling_factor=4"])
    assert cfg.probe == ProbeConfig(enabled=True, sampling_factor=4, r=8)


def test_disallowed_tokens_are_never_sampled(tok):
    bad = disallowed_token_ids(tok, len(tok))
    specials = set(tok.all_special_ids)
    assert specials <= set(bad.tolist())
    assert tok.convert_tokens_to_ids("Ċ") in bad.tolist()  # the newline byte is not printable
    suffix = torch.tensor(tok("x x x x", add_special_tokens=False)["input_ids"])
    grad = torch.zeros(suffix.numel(), len(tok))
    grad[:, bad] = -1e6  # the gradient points straight at the disallowed tokens
    cands = sample_candidates(suffix, grad, 256, 64, 2, bad, torch.Generator().manual_seed(0))
    assert not torch.isin(cands, bad).any()
    changed = (cands != suffix).sum(1)
    assert changed.max() <= 2 and changed.float().mean() > 1.0


def test_kept_candidates_survive_retokenization(tok, model):
    suffix = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"])
    bad = disallowed_token_ids(tok, len(tok))
    cands = sample_candidates(suffix, torch.randn(suffix.numel(), len(tok),
                                                  generator=torch.Generator().manual_seed(1)),
                              400, 200, 2, bad, torch.Generator().manual_seed(2))
    kept = filter_candidates(tok, cands)
    assert 0 < kept.shape[0] < cands.shape[0]  # some candidates merge or split on re-encoding
    for row in kept.tolist():
        assert tok(tok.decode(row), add_special_tokens=False)["input_ids"] == row
    # a whole run only ever moves to candidates that retokenize exactly
    res = GCG(model, tok, small_cfg(num_steps=4)).run(MSG, TARGET)
    assert retokenizes(tok, res.best_ids)
    assert not torch.isin(torch.tensor(res.best_ids), bad).any()


def test_prefix_cache_matches_full_forward(tok, model):
    p = encode_prompt(tok, MSG, TARGET)
    cands = rows(tok, "x y z", "a b c")
    a = target_losses(model, p, cands, batch_size=8, use_prefix_cache=True)
    b = target_losses(model, p, cands, batch_size=8, use_prefix_cache=False)
    assert torch.allclose(a, b, atol=1e-5)
    # and by hand: mean -log p of the target tokens after the whole prompt
    ids = torch.cat([p.before, cands[0], p.after, p.target]).view(1, -1)
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].float(), -1)
    t0 = ids.shape[1] - p.target.numel()
    ref = -lp[t0 - 1:-1].gather(1, p.target.view(-1, 1)).mean()
    assert abs(float(a[0]) - float(ref)) < 1e-5


def test_best_so_far_loss_falls_and_fixed_seed_repeats(tok, model):
    cfg = small_cfg(num_steps=8)
    r1 = GCG(model, tok, cfg).run(MSG, TARGET)
    r2 = GCG(model, tok, cfg).run(MSG, TARGET)
    p = encode_prompt(tok, MSG, TARGET)
    init = torch.tensor(tok(cfg.optim_str_init, add_special_tokens=False)["input_ids"])
    start = float(target_losses(model, p, init.view(1, -1), batch_size=1)[0])
    assert r1.best_loss < start - 0.2
    assert all(a >= b for a, b in zip(r1.best_losses, r1.best_losses[1:]))
    assert r1.best_suffix == r2.best_suffix and r1.best_losses == r2.best_losses
    r3 = GCG(model, tok, small_cfg(num_steps=8, seed=1)).run(MSG, TARGET)
    assert r3.best_ids != r1.best_ids
    # target forwards: per step one gradient pass plus one per candidate scored
    assert r1.target_forwards == sum(s.n_candidates for s in r1.steps) + len(r1.steps)


def test_agreement_and_degenerate_cases():
    from scipy.stats import spearmanr

    d, t = [0.1, 0.5, 0.3, 0.9, 0.7], [1.0, 2.5, 2.0, 2.2, 3.0]
    assert agreement(d, t) == pytest.approx((1 + spearmanr(d, t).statistic) / 2)
    assert agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert agreement([1, 2, 3], [3, 2, 1]) == 0.0
    assert agreement([1.0, 1.0, 1.0], [1, 2, 3]) == 0.0  # NaN -> 0
    assert agreement([2.0], [5.0]) == 0.0  # a probe set of one
    assert agreement([1, 2], [3, 4]) == 1.0  # a probe set of two is always +-1
    assert filtered_size(1.0, 512, 8) == 1 and filtered_size(0.0, 512, 8) == 64
    assert filtered_size(0.5, 512, 8) == 32


def test_probe_with_draft_equal_to_target_matches_plain_gcg(tok, model):
    p = encode_prompt(tok, MSG, TARGET)
    suffix = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"])
    bad = disallowed_token_ids(tok, len(tok))
    cands = filter_candidates(tok, sample_candidates(
        suffix, torch.randn(suffix.numel(), len(tok), generator=torch.Generator().manual_seed(3)),
        128, 64, 1, bad, torch.Generator().manual_seed(4)))
    plain = target_losses(model, p, cands, batch_size=64)
    d = draft_losses((model, tok), [p], tok, cands, batch_size=64)
    assert torch.allclose(d, plain)
    sel = probe_select(d, lambda idx: target_losses(model, p, cands[idx], batch_size=64),
                       sampling_factor=8, r=8, generator=torch.Generator().manual_seed(0))
    assert sel.alpha == 1.0 and len(sel.filtered) == 1
    assert sel.winner == int(plain.argmin()) and sel.winner_loss == pytest.approx(float(plain.min()))
    # the same through the attack: one step with the target as its own draft = plain GCG's step
    g_plain = GCG(model, tok, small_cfg(num_steps=3)).run(MSG, TARGET)
    g_probe = GCG(model, tok, small_cfg(num_steps=3, probe=ProbeConfig(True, 8, 8)),
                  draft=(model, tok)).run(MSG, TARGET)
    assert [s.alpha for s in g_probe.steps] == [1.0, 1.0, 1.0]
    assert g_probe.steps[0].loss == pytest.approx(g_plain.steps[0].loss)
    assert g_probe.steps[0].target_forwards < g_plain.steps[0].target_forwards


def test_draft_with_its_own_tokenizer(tok, model):
    d_tok = build_tiny_tokenizer(vocab_size=300)
    assert d_tok.get_vocab() != tok.get_vocab()
    d_model = micro_model(d_tok, seed=5, dim=16, layers=1)
    p = encode_prompt(tok, MSG, TARGET)
    dp = encode_prompt(d_tok, MSG, TARGET)
    cands = rows(tok, "x y x", "the fox")
    got = draft_losses((d_model, d_tok), [dp], tok, cands, batch_size=4)
    for j in range(2):  # by hand: decode with the target's tokenizer, encode with the draft's
        e = d_tok(tok.decode(cands[j].tolist()), add_special_tokens=False)["input_ids"]
        ids = torch.cat([dp.before, torch.tensor(e), dp.after, dp.target]).view(1, -1)
        t0 = ids.shape[1] - dp.target.numel()
        ref = batched_target_loss(d_model, ids, slice(t0, ids.shape[1]))
        assert float(got[j]) == pytest.approx(float(ref[0]), abs=1e-5)
    res = GCG(model, tok, small_cfg(num_steps=2, probe=ProbeConfig(True, 4, 2)),
              draft=(d_model, d_tok)).run(MSG, TARGET)
    assert all(0.0 <= s.alpha <= 1.0 for s in res.steps) and res.draft_forwards > 0


class _OOMOnBigBatches(torch.nn.Module):
    """A model that raises CUDA out-of-memory on any forward of more than ``limit`` rows."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []
        self.config = inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, cache=None, past_key_values=None, **kw):
        rows = (input_ids if input_ids is not None else kw["inputs_embeds"]).shape[0]
        self.batches.append(rows)
        if rows > self.limit:
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return self.inner(input_ids=input_ids, cache=cache if cache is not None else past_key_values, **kw)


def test_candidate_batch_halves_on_out_of_memory(tok, model):
    p = encode_prompt(tok, MSG, TARGET)
    flaky = _OOMOnBigBatches(model, limit=5)
    suffix = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"])
    cands = suffix.repeat(20, 1)
    cands[:, 2] = torch.arange(20) + 100
    ref = target_losses(model, p, cands, batch_size=64)
    got = target_losses(flaky, p, cands, batch_size=20)
    assert torch.allclose(got, ref, atol=1e-5)
    assert flaky.batches == [1, 20, 10, 5, 5, 5, 5]  # prefix, then 20 -> 10 -> 5 rows a chunk
    # a whole GCG step completes through the out-of-memory errors, with plain GCG's result
    cfg = small_cfg(num_steps=2, eval_batch_size=64)
    res = GCG(_OOMOnBigBatches(model, limit=7), tok, cfg).run(MSG, TARGET)
    assert res.best_losses == pytest.approx(GCG(model, tok, cfg).run(MSG, TARGET).best_losses)


def test_universal_suffix_over_prompts_and_models(tok, model):
    other = micro_model(tok, seed=7)
    msgs = [MSG, "Tell me about the lazy dog"]
    tgts = [TARGET, "Sure, here is the dog"]
    res = GCG([model, other], tok, small_cfg(num_steps=3)).run(msgs, tgts)
    init = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"]).view(1, -1)
    best = torch.tensor(res.best_ids).view(1, -1)

    def mean_loss(s):
        return sum(float(target_losses(m, encode_prompt(tok, a, b), s, batch_size=1)[0])
                   for m in (model, other) for a, b in zip(msgs, tgts)) / 4

    assert mean_loss(best) == pytest.approx(res.best_loss, abs=1e-5)
    assert res.best_loss < mean_loss(init)
    assert res.steps[0].target_forwards == 4 * (res.steps[0].n_candidates + 1)


def test_early_stop_when_greedy_reproduces_target(tok):
    m = micro_model(tok, seed=0)
    p = encode_prompt(tok, MSG, TARGET)
    # teach the micro model the target after this prompt (whatever the suffix)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    suffix = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"])
    ids = torch.cat([p.before, suffix, p.after, p.target]).view(1, -1)
    for _ in range(60):
        loss = m(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    res = GCG(m, tok, small_cfg(num_steps=20, early_stop=True)).run(MSG, TARGET)
    assert res.stopped_early and len(res.steps) < 20


# ---------------------------------------------------------------- runner and CLI
@pytest.fixture(scope="module")
def micro_cache(tmp_path_factory):
    """A model cache shared by this module's tests (the micro recipes build once)."""
    tmp = tmp_path_factory.mktemp("gcg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REASONLAB_CACHE", str(tmp / "cache"))
        yield tmp


def _jsonl(path, rows):
    import json

    path.write_text("".join(json.dumps({"prompt": p, "target": t}) + "\n" for p, t in rows))
    return path


def test_runner_writes_per_behaviour_records_and_resumes(micro_cache, monkeypatch):
    from reasonlab.attacks import runner
    from reasonlab.attacks.runner import AttackConfig, run_attack
    from reasonlab.runs import read_json

    data = _jsonl(micro_cache / "b.jsonl", [("Name 2 fruits.", "Sure, here is"),
                                            ("Name 2 colors.", "Sure, here is a list")])
    cfg = AttackConfig(behaviors=str(data), n_behaviors=2, only_refused=False, micro=True,
                       max_new_tokens=4, transfer=["aligned-chat-draft"],
                       gcg=small_cfg(num_steps=2, search_width=16, optim_str_init="x x x"))
    out = micro_cache / "run"
    res = run_attack(cfg, out, progress=False)
    recs = [read_json(out / "behaviors" / f"{i:03d}.json") for i in range(2)]
    assert (out / "behaviors" / "000.png").exists()
    assert res["n_attacked"] == 2
    assert res["asr_prefix"] == sum(r["success_prefix"] for r in recs) / 2
    assert res["mean_target_forwards"] == sum(r["target_forwards"] for r in recs) / 2
    assert all(len(r["curve"]) == 2 and r["suffix_ids"] for r in recs)
    assert set(recs[0]["transfer"]) == {"aligned-chat-draft"}
    # resume: finished behaviours are read back, never attacked again
    monkeypatch.setattr(runner.GCG, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert run_attack(cfg, out, progress=False) == res


def test_cli_attack_gcg(micro_cache):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    data = _jsonl(micro_cache / "b.jsonl", [("Name 2 fruits.", "Sure, here is")])
    out = micro_cache / "cli"
    args = ["attack", "gcg", "-o", str(out), "--no-progress", "-s", f"behaviors={data}",
            "-s", "n_behaviors=1", "-s", "only_refused=false", "-s", "micro=true",
            "-s", "max_new_tokens=4", "-s", "gcg.num_steps=1", "-s", "gcg.search_width=8",
            "-s", "gcg.probe.enabled=true", "-s", "gcg.probe.sampling_factor=4"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "1/1 behaviours attacked" in r.output and (out / "results.json").exists()
    bad = CliRunner().invoke(app, ["attack", "gcg", "-o", str(out / "x"), "-s", "gcg.topk=0"])
    assert bad.exit_code == 2 and "topk" in bad.output


def test_runner_universal_mode_one_suffix_for_all(micro_cache):
    from reasonlab.attacks.runner import AttackConfig, run_attack
    from reasonlab.runs import read_json

    data = _jsonl(micro_cache / "u.jsonl", [("Name 2 fruits.", "Sure, here is"),
                                            ("Name 2 birds.", "Sure, here is a")])
    cfg = AttackConfig(behaviors=str(data), n_behaviors=2, only_refused=False, micro=True,
                       max_new_tokens=4, mode="universal",
                       gcg=small_cfg(num_steps=2, search_width=16, optim_str_init="x x x"))
    res = run_attack(cfg, micro_cache / "uni", progress=False)
    recs = read_json(micro_cache / "uni" / "behaviors" / "universal.json")["records"]
    assert res["n_attacked"] == 2 and recs[0]["suffix_ids"] == recs[1]["suffix_ids"]
    fwd = recs[0]["target_forwards"]  # every candidate and gradient pass counted once per prompt
    assert fwd == recs[0]["curve"][-1]["target_forwards"] and fwd % 2 == 0


# ---------------------------------------------------------------- speed: no redundant forwards
class _CountingModel(torch.nn.Module):
    """Counts forwards by the number of input positions (the prefix run is the long one)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.lengths = inner, []
        self.config = inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, cache=None, past_key_values=None, **kw):
        x = input_ids if input_ids is not None else kw["inputs_embeds"]
        self.lengths.append(x.shape[1])
        return self.inner(input_ids=input_ids, cache=cache if cache is not None else past_key_values, **kw)


def test_prefix_runs_once_per_attack_and_early_stop_costs_no_forward(tok, model):
    from reasonlab.lm.logprobs import prefix_state

    p = encode_prompt(tok, MSG, TARGET)
    counting = _CountingModel(model)
    cfg = small_cfg(num_steps=4, early_stop=True, probe=ProbeConfig(True, 8, 8))
    res = GCG(counting, tok, cfg, draft=(model, tok)).run(MSG, TARGET)
    # the target runs the part before the suffix once for the whole attack; every other forward
    # (gradients, probe and filtered candidates) starts at the suffix
    tail = len(tok(cfg.optim_str_init, add_special_tokens=False)["input_ids"]) + \
        p.after.numel() + p.target.numel()
    assert counting.lengths[0] == p.before.numel() and set(counting.lengths[1:]) == {tail}
    # per step a gradient, the probe set and the filtered set (unless the probe set held it)
    assert 1 + 2 * len(res.steps) <= len(counting.lengths) <= 1 + 3 * len(res.steps)
    # the early-stop check reuses the winner's scoring forward: nothing counted after the step
    assert res.target_forwards == res.steps[-1].target_forwards
    # the gradient through the cached prefix equals the full-sequence gradient
    suffix = torch.tensor(tok("x y x y", add_special_tokens=False)["input_ids"])
    from reasonlab.attacks.gcg import suffix_grad

    g0, l0 = suffix_grad(model, p, suffix)
    g1, l1 = suffix_grad(model, p, suffix, prefix=prefix_state(model, p.before))
    assert l1 == pytest.approx(l0, abs=1e-5) and torch.allclose(g0, g1, atol=1e-5)


def test_exact_match_flags_equal_greedy_decoding(tok):
    from reasonlab.attacks.gcg import greedy_reproduces, target_scores

    m = micro_model(tok, seed=0)
    p = encode_prompt(tok, MSG, TARGET)
    suffix = torch.tensor(tok("x x x x x x", add_special_tokens=False)["input_ids"])
    ids = torch.cat([p.before, suffix, p.after, p.target]).view(1, -1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(60):  # learn the target after this one suffix only
        loss = m(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    other = tok("a b c d e", add_special_tokens=False)["input_ids"]
    cands = suffix.repeat(len(other) + 1, 1)
    cands[1:, 2] = torch.tensor(other)
    want = [greedy_reproduces(m, p, c) for c in cands]
    assert any(want)
    for cache in (True, False):
        lv, ok = target_scores(m, p, cands, batch_size=4, use_prefix_cache=cache)
        assert ok.tolist() == want
        assert torch.allclose(lv, target_losses(m, p, cands, batch_size=64), atol=1e-5)
    res = GCG(m, tok, small_cfg(num_steps=20, early_stop=True)).run(MSG, TARGET)
    assert res.stopped_early
    assert greedy_reproduces(m, p, torch.tensor(res.best_ids))
    assert res.target_forwards == sum(s.n_candidates for s in res.steps) + len(res.steps)

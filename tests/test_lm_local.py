"""LocalLM and the model-side tensor functions, checked against direct forward passes."""

from __future__ import annotations

import copy

import pytest
import torch

from reasonlab.device import torch_threads
from reasonlab.lm import logprobs as F
from reasonlab.lm.local import LocalLM

PROMPTS = ["Tom has", "The answer is 7 and the quick brown fox", "A train", "Hello world! Step 1:"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; several threads crawl on a loaded machine."""
    with torch_threads(1):
        yield


@pytest.fixture()
def lm(tiny_model, tiny_tokenizer):
    return LocalLM(tiny_model, tiny_tokenizer, device="cpu", batch_size=4)


def naive_greedy(model, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """Greedy decoding by recomputing the full forward pass every step (no cache, no padding)."""
    ids = list(ids)
    out, lps = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids])).logits[0, -1]
            t = int(logits.argmax())
            out.append(t)
            lps.append(float(torch.log_softmax(logits.double(), -1)[t]))
            ids.append(t)
    return out, lps


def manual_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def stop_char(text: str, start: int) -> str:
    """A complete character of ``text`` at or after ``start`` (not a partial-UTF-8 placeholder)."""
    for c in text[start:]:
        if c != "\ufffd":
            return c
    raise AssertionError(f"no complete character in {text!r}")


# ---------------------------------------------------------------- generation
def test_generate_matches_naive_greedy(lm, tiny_model):
    gens = lm.generate(PROMPTS, max_new_tokens=12)
    for p, g in zip(PROMPTS, gens):
        ids, lps = naive_greedy(tiny_model, lm.encode(p), 12)
        assert g.token_ids == ids
        assert g.logprobs == pytest.approx(lps, abs=1e-5)
        assert g.finish_reason == "length" and g.text == lm.decode(ids)


def test_generate_batched_equals_one_at_a_time(lm):
    batched = lm.generate(PROMPTS, max_new_tokens=16, batch_size=4)
    for p, g in zip(PROMPTS, batched):
        single = lm.generate([p], max_new_tokens=16)[0]
        assert g.token_ids == single.token_ids
        assert g.logprobs == pytest.approx(single.logprobs, abs=1e-5)
    chunked = lm.generate(PROMPTS, max_new_tokens=16, batch_size=3)
    assert [g.token_ids for g in chunked] == [g.token_ids for g in batched]


def test_generation_logprobs_are_teacher_forced_logprobs(lm, tiny_model):
    g = lm.generate(["A train"], max_new_tokens=10, temperature=1.0, seed=3)[0]
    prompt_ids = lm.encode("A train")
    lp = manual_logprobs(tiny_model, prompt_ids + g.token_ids)[len(prompt_ids) - 1:]
    assert g.logprobs == pytest.approx(lp.tolist(), abs=1e-5)
    assert g.logprob == pytest.approx(float(lp.sum()), abs=1e-4)


def test_sampling_seeded_reproducible_and_seed_dependent(lm):
    a = lm.generate(PROMPTS, max_new_tokens=10, temperature=1.0, seed=7)
    b = lm.generate(PROMPTS, max_new_tokens=10, temperature=1.0, seed=7)
    c = lm.generate(PROMPTS, max_new_tokens=10, temperature=1.0, seed=8)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]
    greedy = lm.generate(PROMPTS, max_new_tokens=10)
    assert [g.token_ids for g in a] != [g.token_ids for g in greedy]


def test_tiny_top_p_is_greedy_and_top_p_truncates():
    gen = torch.Generator().manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(4000, 4)
    draws = LocalLM._choose(logits, 1.0, 0.7, gen)
    counts = torch.bincount(draws, minlength=4).tolist()
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 >= 0.7: the nucleus is {0, 1}
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)
    assert (LocalLM._choose(logits, 1.0, 1e-6, gen) == 0).all()


def test_tiny_top_p_sampling_equals_greedy(lm):
    greedy = lm.generate(PROMPTS, max_new_tokens=8)
    nucleus = lm.generate(PROMPTS, max_new_tokens=8, temperature=0.8, top_p=1e-6, seed=0)
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in greedy]


def test_stop_strings_cut_text(lm):
    full = lm.generate(PROMPTS, max_new_tokens=24)
    stops = [[stop_char(g.text, 4)] for g in full]
    cut = [lm.generate([p], max_new_tokens=24, stop=s)[0] for p, s in zip(PROMPTS, stops)]
    for f, c, s in zip(full, cut, stops):
        idx = f.text.find(s[0])
        assert c.text == f.text[:idx]
        assert c.finish_reason == "stop" and c.stop_reason == s[0]
        assert f.token_ids[:len(c.token_ids)] == c.token_ids
        assert s[0] in lm.decode(c.token_ids) and s[0] not in lm.decode(c.token_ids[:-1])
    # a batch with different stops per call: the earliest stop string wins
    f = full[0]
    early, late = stop_char(f.text, 1), stop_char(f.text, 8) + "x"
    g = lm.generate([PROMPTS[0]], max_new_tokens=24, stop=[late, early])[0]
    first = min(i for i in (f.text.find(early), f.text.find(late)) if i >= 0)
    assert g.text == f.text[:first]


def test_stop_tokens(lm, tiny_tokenizer):
    eot = tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert {tiny_tokenizer.eos_token_id, eot} <= lm.stop_token_ids
    full = lm.generate([PROMPTS[1]], max_new_tokens=20)[0]
    k = next(i for i, t in enumerate(full.token_ids) if i >= 4 and t not in full.token_ids[:i])
    stopper = LocalLM(lm.model, tiny_tokenizer, device="cpu")
    stopper.stop_token_ids = {full.token_ids[k]}
    g = stopper.generate([PROMPTS[1]], max_new_tokens=20)[0]
    assert g.token_ids == full.token_ids[:k + 1]
    assert g.finish_reason == "stop" and g.stop_reason == full.token_ids[k]
    assert g.text == lm.decode(full.token_ids[:k])


def test_generate_edge_cases(lm, tiny_model):
    assert lm.generate(["Tom"], max_new_tokens=0)[0].token_ids == []
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(["Tom"], temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        lm.generate(["Tom"], top_p=0)
    with pytest.raises(TypeError):
        lm.generate("Tom")
    tiny_model.train()
    lm.generate(["Tom"], max_new_tokens=2)
    assert tiny_model.training
    tiny_model.eval()


# ---------------------------------------------------------------- shared prefix
def test_prefix_greedy_equals_generate(lm):
    prefix = "Mia reads 12 pages a day for 5 days. Step 1:"
    plain = lm.generate([prefix], max_new_tokens=12)[0]
    shared = lm.generate_from_prefix(prefix, 5, max_new_tokens=12, batch_size=2)
    assert len(shared) == 5
    for g in shared:
        assert g.token_ids == plain.token_ids
        assert g.logprobs == pytest.approx(plain.logprobs, abs=1e-5)


def test_prefix_reuse_forward_token_counts(lm):
    prefix = "Mia reads 12 pages a day for 5 days."
    p = len(lm.encode(prefix))
    lm.reset_counters()
    lm.generate([prefix] * 6, max_new_tokens=5, batch_size=6)
    naive = lm.reset_counters()
    lm.generate_from_prefix(prefix, 6, max_new_tokens=5, batch_size=6)
    shared = lm.reset_counters()
    assert naive["forward_tokens"] == 6 * p + 6 * 4
    assert shared["forward_tokens"] == p + 6 * 4
    assert naive["generated_tokens"] == shared["generated_tokens"] == 30
    assert lm.counters["forward_tokens"] == 0


def test_prefix_with_suffixes_matches_naive(lm, tiny_model):
    prefix, suffixes = "Tom has 3 apples.", [" Step 1:", "", " The answer is"]
    gens = lm.generate_from_prefix(prefix, 3, suffixes=suffixes, max_new_tokens=8)
    for s, g in zip(suffixes, gens):
        ids = lm.encode(prefix) + lm.encode(s, add_special_tokens=False)
        want, lps = naive_greedy(tiny_model, ids, 8)
        assert g.token_ids == want
        assert g.logprobs == pytest.approx(lps, abs=1e-5)


def test_prefix_sampling_seeded(lm):
    a = lm.sample_steps("Tom has", 6, seed=1, max_new_tokens=8)
    b = lm.sample_steps("Tom has", 6, seed=1, max_new_tokens=8)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert len({tuple(g.token_ids) for g in a}) > 1  # different samples from the same prefix
    assert all("\n" not in g.text for g in a)


# ---------------------------------------------------------------- scoring
def test_score_equals_manual_log_softmax(lm, tiny_model):
    prompt, cont = "Tom has 3 apples", " and buys 4 more."
    s = lm.score([prompt], [cont])[0]
    full = lm.encode(prompt + cont)
    k = len(full) - len(s.token_ids)
    assert full[:k] == lm.encode(prompt)  # clean boundary here
    manual = manual_logprobs(tiny_model, full)[k - 1:]
    assert s.token_ids == full[k:]
    assert s.token_logprobs == pytest.approx(manual.tolist(), abs=1e-5)
    assert s.total == pytest.approx(float(manual.sum()), abs=1e-4)
    assert s.num_tokens == len(full) - k


def test_score_batched_equals_unbatched(lm):
    conts = [" 7.", " over the lazy dog.", " travels 60 km", " 12 * 5 = 60."]
    batched = lm.score(PROMPTS, conts, batch_size=4)
    for p, c, b in zip(PROMPTS, conts, batched):
        one = lm.score([p], [c])[0]
        assert one.token_ids == b.token_ids
        assert one.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-5)


def test_score_straddling_token_counts_as_continuation(lm):
    s = lm.score(["Hel"], ["lo world"])[0]
    assert lm.decode(s.token_ids).endswith("lo world")
    assert lm.encode("Hello world")[-len(s.token_ids):] == s.token_ids


def test_answer_probs(lm):
    ap = lm.answer_probs("Step 1: 3 + 4 = 7.\nThe answer is", [" 7", " 8", " 70"])
    assert sum(ap.normalized) == pytest.approx(1.0, abs=1e-9)
    scored = lm.score(["Step 1: 3 + 4 = 7.\nThe answer is"] * 3, [" 7", " 8", " 70"])
    assert ap.logprobs == pytest.approx([s.total for s in scored], abs=1e-9)
    raw = torch.tensor(ap.probs, dtype=torch.float64)
    assert ap.normalized == pytest.approx((raw / raw.sum()).tolist(), rel=1e-6)
    assert ap.mean_logprobs[2] == pytest.approx(ap.logprobs[2] / ap.num_tokens[2])


def test_sequence_logprobs_padding_and_grad(lm, tiny_model):
    texts = [("Tom has", " 3 apples."), ("The quick brown fox", " jumps")]
    scored = lm.score([p for p, _ in texts], [c for _, c in texts])
    rows = [lm.encode(p + c) for p, c in texts]
    width = max(map(len, rows))
    for side in ("left", "right"):
        ids = torch.full((2, width), lm.pad_token_id)
        attn = torch.zeros(2, width, dtype=torch.long)
        lab = torch.zeros(2, width, dtype=torch.bool)
        for i, (r, s) in enumerate(zip(rows, scored)):
            off = width - len(r) if side == "left" else 0
            ids[i, off:off + len(r)] = torch.tensor(r)
            attn[i, off:off + len(r)] = 1
            lab[i, off + len(r) - s.num_tokens:off + len(r)] = True
        total = F.sequence_logprobs(tiny_model, ids, attn, lab)
        assert total.tolist() == pytest.approx([s.total for s in scored], abs=1e-4)
    mean = F.sequence_logprobs(tiny_model, ids, attn, lab, average=True)
    assert mean.tolist() == pytest.approx([s.total / s.num_tokens for s in scored], abs=1e-5)
    model = copy.deepcopy(tiny_model)
    F.sequence_logprobs(model, ids, attn, lab).sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- GCG pieces
def _ce(model, ids: torch.Tensor, target: slice) -> torch.Tensor:
    lp = manual_logprobs(model, ids.tolist())
    return -lp[target.start - 1:target.stop - 1].mean()


def test_batched_target_loss(lm, tiny_model):
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (7, 12))
    target = slice(8, 12)
    want = torch.stack([_ce(tiny_model, r, target) for r in ids]).float()
    got = lm.batched_target_loss(ids, target, batch_size=3)
    assert torch.allclose(got, want, atol=1e-5)
    mask = torch.zeros(7, 12, dtype=torch.bool)
    mask[:, target] = True
    assert torch.allclose(lm.batched_target_loss(ids, mask), got, atol=1e-6)
    # a shared prefix through its KV cache gives the same losses as the full sequences
    prefix = torch.randint(3, 300, (5,))
    full = torch.cat([prefix.expand(7, 5), ids], dim=1)
    plain = lm.batched_target_loss(full, slice(13, 17))
    cached = lm.batched_target_loss(ids, target, prefix_ids=prefix, batch_size=4)
    assert torch.allclose(plain, cached, atol=1e-5)
    t0 = lm.batched_target_loss(ids, slice(0, 4), prefix_ids=prefix)  # position 0 is scorable
    assert torch.allclose(t0, lm.batched_target_loss(full, slice(5, 9)), atol=1e-5)


def test_batched_target_loss_halves_chunks_on_oom(lm, monkeypatch):
    ids = torch.randint(3, 300, (5, 8), generator=torch.Generator().manual_seed(2))
    want = lm.batched_target_loss(ids, slice(4, 8), batch_size=8)
    real, sizes = F._chunk_loss, []

    def small_memory(model, chunk, *args):
        sizes.append(chunk.shape[0])
        if chunk.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(model, chunk, *args)

    monkeypatch.setattr(F, "_chunk_loss", small_memory)
    got = lm.batched_target_loss(ids, slice(4, 8), batch_size=8)
    assert sizes == [5, 4, 2, 2, 1]
    assert torch.allclose(got, want, atol=1e-6)


def test_onehot_grad_matches_embedding_grad_and_finite_differences(lm, tiny_model):
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (10,))
    positions, target = slice(3, 6), slice(7, 10)
    grad, loss = lm.onehot_grad(ids, positions, target)
    assert grad.shape == (3, len(lm.tokenizer))
    assert loss == pytest.approx(float(_ce(tiny_model, ids, target)), abs=1e-5)
    assert tiny_model.lm_head.weight.grad is None
    # autograd through the embeddings: d/d onehot = d/d emb @ W^T
    emb = lm.embed(ids[None]).detach().requires_grad_(True)
    logits = F.forward_logits(tiny_model, inputs_embeds=emb)
    ce = -F.token_logprobs(logits, ids[None])[0, target].mean()
    (g_emb,) = torch.autograd.grad(ce, emb)
    assert torch.allclose(grad, g_emb[0, positions] @ lm.embedding_matrix.T.detach(), atol=1e-6)
    # central finite differences, moving one-hot mass of slot i towards token v (the model's
    # RMSNorm computes in float32 whatever the dtype, so eps is not tiny)
    W = lm.embedding_matrix.detach()
    eps = 3e-2
    for i, v in [(0, 17), (1, 200), (2, int(ids[5]))]:
        def loss_at(delta):
            e = lm.embed(ids[None]).detach().clone()
            e[0, 3 + i] += delta * W[v]
            with torch.no_grad():
                lg = F.forward_logits(tiny_model, inputs_embeds=e)
            return float(-F.token_logprobs(lg, ids[None])[0, target].double().mean())
        fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
        assert fd == pytest.approx(float(grad[i, v]), rel=2e-3, abs=2e-5)


# ---------------------------------------------------------------- chat and loading
def test_chat_template(lm, tiny_tokenizer):
    msgs = [{"role": "user", "content": "Tom has 3 apples."}]
    text = lm.apply_chat_template(msgs)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTom has 3 apples."
                    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = lm.encode(text)
    assert ids.count(tiny_tokenizer.bos_token_id) == 1 and ids[0] == tiny_tokenizer.bos_token_id
    replies = lm.chat([msgs, msgs], max_new_tokens=5)
    direct = lm.generate([text], max_new_tokens=5)[0].token_ids
    assert [r.token_ids for r in replies] == [direct, direct]
    bare = copy.copy(tiny_tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        LocalLM(lm.model, bare, device="cpu").apply_chat_template(msgs)


def test_from_pretrained_roundtrip(lm, tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = LocalLM.from_pretrained(tmp_path, device="cpu")
    assert loaded.model.dtype == torch.float32
    conts = [" 7.", " over the lazy dog.", " travels 60 km", " 12 * 5 = 60."]
    a, b = lm.score(PROMPTS, conts), loaded.score(PROMPTS, conts)
    for x, y in zip(a, b):
        assert x.token_ids == y.token_ids
        assert x.token_logprobs == pytest.approx(y.token_logprobs, abs=1e-6)
    assert loaded.stop_token_ids == lm.stop_token_ids
    with pytest.raises(FileNotFoundError):
        LocalLM.from_pretrained(tmp_path / "missing", device="cpu")

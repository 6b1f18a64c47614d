"""The compositional image adapter: visual SkillMath, the encoder, the Mllama assembly (text-only
logits equal the frozen solver's), training on micro models, save/reload and generation."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reasonlab.config import ConfigError, from_dict  # noqa: E402
from reasonlab.data.answers import check_answer  # noqa: E402
from reasonlab.data.skillmath import SkillMathConfig, generate  # noqa: E402
from reasonlab.vision import adapter as A  # noqa: E402
from reasonlab.vision import data as D  # noqa: E402
from reasonlab.vision import encoder as E  # noqa: E402

MICRO_ENC = dict(hidden_size=16, num_hidden_layers=1, num_global_layers=1, attention_heads=2,
                 intermediate_size=32, patch_size=8, batch_size=16)


def _splits(n_train=40, n_test=8):
    cfg = SkillMathConfig(n_train=n_train, n_val=2, n_test=n_test, n_test_template=0,
                          n_test_pair=0, skills=["add", "sub"], k_weights=[0.7, 0.3, 0.0],
                          max_number=30, max_answer=300, templates=[0], variants=[0],
                          heldout_template=-1, heldout_pairs=[], solution_style="columns_all")
    return generate(cfg)


@pytest.fixture(scope="module")
def solver():
    from transformers import AutoTokenizer, LlamaForCausalLM

    from reasonlab.models.cache import model_path

    torch.set_num_threads(1)
    path = model_path("solver-addsub", micro=True)
    tok = AutoTokenizer.from_pretrained(path)
    A.add_image_token(tok)
    return path, tok, LlamaForCausalLM.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    from transformers import MllamaVisionModel

    return MllamaVisionModel(E.vision_config(E.EncoderConfig(**MICRO_ENC))).eval()


def test_visual_problem_replaces_the_first_operand_and_keeps_the_solution():
    sp = _splits()
    vis = D.visual_split(sp["test"], heldout=True, seed=0)
    assert len(vis) == len(sp["test"])
    for v in vis:
        assert v.question.count(D.IMAGE_TOKEN) == 1
        assert v.question.replace(D.IMAGE_TOKEN, str(v.number)) == v.problem.question
        assert v.problem.solution.startswith(f"{v.number} ")
        assert check_answer(v.problem.solution, v.problem.answer)
        assert v.image.shape == (16, 16) and 0 <= v.image.min() and v.image.max() <= 1
    again = D.visual_split(sp["test"], heldout=True, seed=0)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(vis, again))


def test_rendered_number_holds_load_digits_images_and_pools_are_disjoint():
    train, held = D.digit_pool(False), D.digit_pool(True)
    images, target = D._digits()
    assert sum(len(v) for v in train.values()) + sum(len(v) for v in held.values()) == len(target)
    a = {train[3][i].tobytes() for i in range(len(train[3]))}
    assert not a & {held[3][i].tobytes() for i in range(len(held[3]))}
    img = D.render_number(47, random.Random(0), held, jitter=False)
    rows = slice(4, 12)
    assert any(np.array_equal(img[rows, 0:8], x) for x in held[4])
    assert any(np.array_equal(img[rows, 8:16], x) for x in held[7])
    one = D.render_number(5, random.Random(0), held, jitter=False)
    assert one[:, :8].sum() == 0 and one[:, 8:].sum() > 0
    with pytest.raises(ValueError, match="0..99"):
        D.render_number(100, random.Random(0), held)


def test_cross_layer_placement_every_fourth():
    assert A.cross_layer_indices(32, 4) == [0, 5, 10, 15, 20, 25, 30, 35]
    assert A.cross_layer_indices(3, 4) == [0]
    assert A.cross_layer_indices(4, 2) == [0, 3]


def test_text_only_logits_equal_the_frozen_solver_before_and_after_training(solver, encoder):
    path, tok, llama = solver
    model = A.assemble(llama, encoder, every=2)
    n_self = llama.config.num_hidden_layers
    assert len(model.model.language_model.layers) == n_self + len(A.cross_layer_indices(n_self, 2))
    sp = _splits()
    vis = D.visual_split(sp["train"], heldout=False, seed=0)
    texts = [v.text_prompt + v.problem.solution for v in vis[:4]]
    # zero gates: text-only and with-image logits both equal the solver's exactly
    batch = A.training_batch(tok, vis[:4], model.config.image_token_index)
    with torch.no_grad():
        with_img = model(**batch).logits
        no_img = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert float((with_img - no_img).abs().max()) == 0.0
    before = _max_diff(llama, model, tok, texts)
    assert before == 0.0
    res = A.train_adapter(model, tok, vis, A.AdapterConfig(steps=12, batch_size=8, lr=1e-2))
    assert all(abs(g) > 1e-4 for pair in res["gates"] for g in pair)  # the gates opened
    assert _max_diff(llama, model, tok, texts) == 0.0  # text path untouched
    with torch.no_grad():
        with_img = model(**batch).logits
    assert float((with_img - no_img).abs().max()) > 1e-3  # the image now changes the logits
    # only the adapter trained: the solver's copied weights are the solver's
    lm = model.model.language_model
    self_layers = [lay for i, lay in enumerate(lm.layers)
                   if i not in model.config.text_config.cross_attention_layers]
    assert torch.equal(self_layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight)


def _max_diff(llama, model, tok, texts):
    from reasonlab.vision.runner import text_logit_diff

    return text_logit_diff(llama, model, tok, texts)


def test_adapter_loss_falls_and_save_reload_generates_like_the_solver(solver, encoder, tmp_path):
    from reasonlab.lm.local import LocalLM

    path, tok, llama = solver
    model = A.assemble(llama, encoder, every=4)
    sp = _splits(n_train=60)
    vis = D.visual_split(sp["train"], heldout=False, seed=0)
    res = A.train_adapter(model, tok, vis, A.AdapterConfig(steps=30, batch_size=16, lr=1e-2))
    n_cross = len(model.config.text_config.cross_attention_layers)
    assert res["trainable_params"] == sum(
        p.numel() for p in model.model.multi_modal_projector.parameters()) + n_cross * sum(
        p.numel() for p in model.model.language_model.layers[0].parameters())
    first, last = np.mean(res["losses"][:5]), np.mean(res["losses"][-5:])
    assert last < first - 0.1, (first, last)
    lm = A.VisualLM(model, tok)
    lm.save_pretrained(tmp_path / "m")
    again = A.VisualLM.from_pretrained(tmp_path / "m")
    items = vis[:3]
    g1 = lm.generate([v.prompt for v in items], images=[v.image for v in items], max_new_tokens=12)
    g2 = again.generate([v.prompt for v in items], images=[v.image for v in items],
                        max_new_tokens=12)
    assert [g.token_ids for g in g1] == [g.token_ids for g in g2]
    # text prompts through the combined model generate what the solver generates
    ref = LocalLM.from_pretrained(path, device="cpu")
    prompts = [v.text_prompt for v in vis[:4]]
    assert again.complete(prompts, max_new_tokens=16) == ref.complete(prompts, max_new_tokens=16)
    with pytest.raises(ValueError, match="images for"):
        lm.generate([items[0].prompt], images=[])


def test_encoder_loss_falls_and_reloads(tmp_path):
    torch.manual_seed(0)
    enc, heads, info = E.train_encoder(E.EncoderConfig(**MICRO_ENC, steps=40, lr=3e-3))
    assert np.mean(info["losses"][-8:]) < np.mean(info["losses"][:8]) - 0.05
    E.save_encoder(enc, heads, tmp_path / "enc")
    enc2, heads2 = E.load_encoder(tmp_path / "enc")
    imgs = [D.render_number(n, random.Random(n), D.digit_pool(True)) for n in (3, 47, 90)]
    assert E.read_numbers(enc, heads, imgs) == E.read_numbers(enc2, heads2, imgs)


def test_bad_config_names_the_key():
    from reasonlab.vision.runner import MultimodalConfig

    with pytest.raises(ConfigError, match="adapter.cross_attention_every"):
        from_dict(MultimodalConfig, {"adapter": {"cross_attention_every": 0}})
    with pytest.raises(ConfigError, match="encoder.patch_size"):
        from_dict(MultimodalConfig, {"encoder": {"patch_size": 6}})

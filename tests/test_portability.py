"""Saved folders in the layout of Meta's Llama 3 / 3.1 files, read the same by transformers 4.x."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from reasonlab.llama.configs import LLAMA31_ROPE_SCALING, LLAMA3_ROPE_THETA
from reasonlab.lm.checkpoint import load_causal_lm, load_tokenizer_from, save_model_folder, verify_manifest
from reasonlab.lm.portable import (
    legacy_keys, make_portable, note_if_legacy, portable_config, upgrade_folder,
)

from conftest import build_tiny_model

ROPE_31 = {**LLAMA31_ROPE_SCALING, "original_max_position_embeddings": 64, "rope_theta": LLAMA3_ROPE_THETA}
TEXTS = ["Q: What is 26 + 71?\nA:", "héllo wörld 🙂  tabs\tand\n\nlines", "<|eot_id|> as text", ""]
CHAT = [{"role": "system", "content": "Add."}, {"role": "user", "content": "What is 3 + 4?"}]


def _model(tok, scaled: bool = False):
    if not scaled:
        return build_tiny_model(tok, preset_name="micro-0.03m")
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import preset

    cfg = preset("micro-0.03m", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg.rope_parameters = dict(ROPE_31)  # before the model is built: its rotary table reads it
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def _legacy_copy(folder: Path, dest: Path) -> Path:
    """``folder`` as transformers 5 alone writes it (what older versions of the project saved)."""
    shutil.copytree(folder, dest)
    cfg = json.loads((dest / "config.json").read_text())
    for k in ("rope_theta", "rope_scaling", "torch_dtype"):
        cfg.pop(k, None)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    tc = json.loads((dest / "tokenizer_config.json").read_text())
    tc["tokenizer_class"] = "TokenizersBackend"
    tc["extra_special_tokens"] = tc.pop("additional_special_tokens")
    for k in ("added_tokens_decoder", "chat_template", "model_input_names"):
        tc.pop(k, None)
    (dest / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (dest / "special_tokens_map.json").unlink()
    (dest / "reasonlab_manifest.json").unlink()
    return dest


def test_saved_folders_carry_the_llama3_layout(tmp_path, tiny_tokenizer):
    base = save_model_folder(_model(tiny_tokenizer), tiny_tokenizer, tmp_path / "base")
    scaled = save_model_folder(_model(tiny_tokenizer, scaled=True), tiny_tokenizer, tmp_path / "scaled")
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["rope_theta"] == 500000.0 and cfg["rope_scaling"] is None
    assert cfg["rope_parameters"] == {"rope_type": "default", "rope_theta": 500000.0}  # 5.x's own
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"
    cfg = json.loads((scaled / "config.json").read_text())
    assert cfg["rope_theta"] == 500000.0
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    tc = json.loads((base / "tokenizer_config.json").read_text())
    assert tc["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "extra_special_tokens" not in tc and "<|eot_id|>" in tc["additional_special_tokens"]
    assert tc["chat_template"] == (base / "chat_template.jinja").read_text()
    assert tc["model_input_names"] == ["input_ids", "attention_mask"]
    added = {int(k): v["content"] for k, v in tc["added_tokens_decoder"].items()}
    assert added[tiny_tokenizer.bos_token_id] == "<|begin_of_text|>"
    assert all(v["special"] for v in tc["added_tokens_decoder"].values())
    smap = json.loads((base / "special_tokens_map.json").read_text())
    assert smap["bos_token"] == "<|begin_of_text|>" and smap["eos_token"] == "<|end_of_text|>"
    assert verify_manifest(base)  # the manifest is written after the rewrite
    assert legacy_keys(base) == [] and make_portable(base) == []  # idempotent


def test_portable_folder_loads_identically_in_transformers5(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig

    model = _model(tiny_tokenizer, scaled=True)
    new = save_model_folder(model, tiny_tokenizer, tmp_path / "new")
    old = _legacy_copy(new, tmp_path / "old")
    a, b = AutoConfig.from_pretrained(new), AutoConfig.from_pretrained(old)
    da, db = a.to_dict(), b.to_dict()
    da.pop("_name_or_path"), db.pop("_name_or_path")
    assert da == db and da["rope_parameters"] == ROPE_31
    ta, tb = load_tokenizer_from(new), load_tokenizer_from(old)
    assert type(ta) is type(tb) and ta.all_special_ids == tb.all_special_ids
    assert ta.special_tokens_map == tb.special_tokens_map and ta.chat_template == tb.chat_template
    assert [ta(t)["input_ids"] for t in TEXTS] == [tb(t)["input_ids"] for t in TEXTS]
    assert (ta.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
            == tb.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))
    ids = torch.randint(0, len(tiny_tokenizer), (1, 80), generator=torch.Generator().manual_seed(0))
    plain = _model(tiny_tokenizer)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref = model(ids).logits
        la = load_causal_lm(new)(ids).logits
        lb = load_causal_lm(old)(ids).logits
        unscaled = plain(ids).logits
    assert torch.equal(la, ref) and torch.equal(lb, ref)
    assert (unscaled - ref).abs().max() > 1e-4  # the scaling is read, not ignored


def test_older_folder_loads_with_a_note_and_is_filled_in_when_saved(tmp_path, tiny_tokenizer, caplog):
    new = save_model_folder(_model(tiny_tokenizer), tiny_tokenizer, tmp_path / "new")
    old = _legacy_copy(new, tmp_path / "old")
    missing = legacy_keys(old)
    assert "config.json rope_theta" in missing and any("TokenizersBackend" in m for m in missing)
    with caplog.at_level(logging.WARNING, logger="reasonlab.lm.portable"):
        tok = load_tokenizer_from(old)
        model = load_causal_lm(old)
    notes = [r.getMessage() for r in caplog.records if r.name == "reasonlab.lm.portable"]
    assert len(notes) == 1 and "\n" not in notes[0]  # one line, once per folder
    assert str(old) in notes[0] and "rope_theta" in notes[0] and "TokenizersBackend" in notes[0]
    again = save_model_folder(model, tok, tmp_path / "again")
    assert legacy_keys(again) == []
    assert json.loads((again / "config.json").read_text())["rope_theta"] == 500000.0
    # in place, with the manifest kept valid
    from reasonlab.lm.checkpoint import write_manifest

    write_manifest(old)
    assert "config.json" in upgrade_folder(old)
    assert legacy_keys(old) == [] and verify_manifest(old) and note_if_legacy(old) == []


def test_portable_config_rules():
    cfg = {"model_type": "llama", "rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}
    with pytest.raises(ValueError, match="low_freq_factor"):
        portable_config(cfg)
    other = {"model_type": "mllama", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}
    assert portable_config(other) == other
    plain = {"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 2.5e5}}
    assert portable_config(portable_config(plain)) == portable_config(plain)
    assert portable_config(plain)["rope_theta"] == 2.5e5


def test_tokenizer_saves_are_portable(tmp_path):
    from reasonlab.llama.tokenizer import load_or_train_tokenizer, train_tokenizer

    from conftest import TINY_CORPUS

    train_tokenizer(TINY_CORPUS, vocab_size=300, min_frequency=1, out_dir=tmp_path / "a")
    load_or_train_tokenizer(tmp_path / "b", TINY_CORPUS, vocab_size=300)
    for d in ("a", "b"):
        tc = json.loads((tmp_path / d / "tokenizer_config.json").read_text())
        assert tc["tokenizer_class"] == "PreTrainedTokenizerFast" and legacy_keys(tmp_path / d) == []


# ------------------------------------------------------------- the last transformers 4.x, for real
@pytest.mark.slow
def test_last_transformers4_reads_the_same_models(tmp_path):
    """Logits within 1e-5, identical greedy continuations and identical tokenizer ids (texts and
    chat template) between this transformers and the last 4.x release, for a base preset and a
    3.1-style preset with RoPE scaling; an older-layout config really reads differently there."""
    from reasonlab.lm import portable_check as pc

    root = Path(__file__).resolve().parents[1] / "benchmarks" / ".venv-tf4"
    try:
        py, version = pc.ensure_reader_env(root)
    except pc.IndexUnreachable as e:
        pytest.skip(f"package index unreachable, no transformers 4.x reader: {e}")
    cases = pc.build_cases(tmp_path)
    cases.append(pc.legacy_config_case(cases[0], tmp_path))
    spec = pc.spec_for(cases, max_new_tokens=8)
    ours = pc.read_here(spec)
    theirs = pc.read_with(py, spec, tmp_path)
    assert theirs["transformers"] == version and version.startswith("4.")
    res = pc.compare(ours, theirs)
    for name in pc.PRESETS:
        r = res[name]
        assert "error" not in r, r
        assert r["logit_max_abs_diff"] <= 1e-5, (name, r)
        assert r["greedy_identical"] and r["tokenizer_identical"], (name, r)
        assert r["rope_theta"] == 500000.0
    assert res["llama3.1-style"]["rope_scaling"]["rope_type"] == "llama3"
    # The same weights with 5.x's config alone: 4.x falls back to theta 10,000 and reads another model.
    assert res["base-legacy-config"]["rope_theta"] == 10000.0
    assert res["base-legacy-config"]["logit_max_abs_diff"] > 1e-3

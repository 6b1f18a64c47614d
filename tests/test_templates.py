"""PTST prompt templates: byte for byte the published strings in each chat format; the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonlab.templates import (
    CHAT_FORMATS,
    LLAMA_SAFETY_PROMPT,
    PTST_TEMPLATES,
    PromptTemplate,
    get_template,
    load_templates,
    register_template,
    render,
    render_all,
    template_names,
    unregister_template,
)

# Expected strings: llama2 from PTST's prompt_utils.py (the %-template of each style, [INST] added),
# llama3 and mistral from the published chat templates rendered with jinja2.
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ptst_templates.json").read_text("utf-8"))
QUESTION = FIXTURE["question"]


@pytest.mark.parametrize("fmt", ["llama2", "llama3", "mistral"])
@pytest.mark.parametrize("name", PTST_TEMPLATES)
def test_every_template_renders_byte_for_byte(fmt, name):
    assert render(name, QUESTION, fmt).encode("utf-8") == FIXTURE[fmt][name].encode("utf-8")


def test_ours_and_a_tokenizer_chat_template_render_the_same():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from reasonlab.lm.chat_format import LLAMA3_CHAT_TEMPLATE

    def tok(template, bos):
        t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), bos_token=bos,
                                    eos_token="</s>")
        t.chat_template = template
        return t

    ours = tok(LLAMA3_CHAT_TEMPLATE, "<|begin_of_text|>")
    mistral = tok(FIXTURE["mistral_chat_template"], "<s>")
    for name in PTST_TEMPLATES:
        # the project's models use the Llama 3 format; a tokenizer's own template is used as is
        assert render(name, QUESTION, "ours") == FIXTURE["llama3"][name]
        assert render(name, QUESTION, ours) == FIXTURE["llama3"][name]
        assert render(name, QUESTION, mistral) == FIXTURE["mistral"][name]


def test_template_contents_and_safety_flag():
    assert template_names()[:7] == list(PTST_TEMPLATES)
    assert get_template("chat:llama").system == LLAMA_SAFETY_PROMPT
    assert "\n" not in LLAMA_SAFETY_PROMPT and LLAMA_SAFETY_PROMPT in FIXTURE["llama2"]["chat:llama"]
    assert [get_template(n).has_safety_prompt for n in PTST_TEMPLATES] == [
        False, False, False, False, True, True, False]
    assert get_template("chat:vanilla").messages("x") == [{"role": "user", "content": "Question: x"}]
    # braces in a question are text, not format fields
    assert render("text:vanilla", "{a} {question}", "llama2") == "Question: {a} {question}\nAnswer:"
    assert set(render_all("q", "llama3")) >= set(PTST_TEMPLATES)


def test_registry_from_yaml(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text('chat:pirate:\n  user: "Arr, {question}"\n  system: "Be safe."\n'
                 'text:qa:\n  text: "Q: {question}\\nA:"\n')
    try:
        made = load_templates(f)
        assert [t.name for t in made] == ["chat:pirate", "text:qa"]
        assert render("chat:pirate", "hi", "llama2") == "[INST] <<SYS>>\nBe safe.\n<</SYS>>\n\nArr, hi [/INST]"
        assert render("text:qa", "hi", "mistral") == "Q: hi\nA:"
        with pytest.raises(ValueError, match="already registered"):
            register_template(PromptTemplate("chat:pirate", "chat", user="{question}"))
        with pytest.raises(ValueError, match="built-in"):
            register_template(PromptTemplate("chat:llama", "chat", user="{question}"), replace=True)
    finally:
        unregister_template("chat:pirate")
        unregister_template("text:qa")
    assert "chat:pirate" not in template_names()


@pytest.mark.parametrize("text, match", [
    ("x:\n  user: no placeholder\n", "exactly once"),
    ("x:\n  text: '{question}'\n  system: s\n", "takes only 'text'"),
    ("x:\n  user: '{question}'\n  colour: red\n", "unknown keys"),
    ("- a\n", "expected a mapping"),
])
def test_bad_yaml_templates_are_named(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_templates(f)


def test_unknown_names():
    with pytest.raises(KeyError, match="unknown prompt template 'chat:nope'"):
        render("chat:nope", "q")
    with pytest.raises(KeyError, match="unknown chat format"):
        render("chat:llama", "q", "vicuna")
    assert set(CHAT_FORMATS) == {"llama2", "llama3", "mistral", "ours"}

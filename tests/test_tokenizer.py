from reasonlab.llama.tokenizer import (
    LLAMA3_SPECIAL_TOKENS, encode_document, formatting_token_ids, load_tokenizer, stop_token_ids,
    train_tokenizer,
)

TEXTS = ["Tom has 12 apples and buys 345 more. The answer is 357."] * 40 + ["How many pens are left?"] * 20


def test_special_tokens_and_chat_template(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300, out_dir=tmp_path)
    vocab = tok.get_vocab()
    assert all(t in vocab for t in LLAMA3_SPECIAL_TOKENS)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    # special tokens are single ids; round trip through a saved directory
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(vocab["<|eot_id|>"]) == 2
    again = load_tokenizer(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.decode(ids) == text
    assert set(stop_token_ids(again)) == {vocab["<|end_of_text|>"], vocab["<|eot_id|>"], vocab["<|eom_id|>"]}
    assert vocab["<|start_header_id|>"] in formatting_token_ids(again)


def test_digit_modes():
    single = train_tokenizer(TEXTS, vocab_size=320, digits="single")
    pieces = [single.decode([i]) for i in single("Tom has 12345 apples", add_special_tokens=False)["input_ids"]]
    assert [p for p in pieces if p.strip().isdigit()] == ["1", "2", "3", "4", "5"]
    none = train_tokenizer(TEXTS, vocab_size=320, digits="none")
    pieces = [none.decode([i]) for i in none("has 345", add_special_tokens=False)["input_ids"]]
    assert any(len(p.strip()) > 1 and p.strip().isdigit() for p in pieces)  # merged digits


def test_bos_like_llama3_and_document_encoding():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    assert tok("Tom")["input_ids"][0] == tok.bos_token_id
    assert tok("Tom", add_special_tokens=False)["input_ids"][0] != tok.bos_token_id
    doc = encode_document(tok, "Tom")
    assert doc[0] == tok.bos_token_id and doc[-1] == tok.eos_token_id


def test_vocab_below_minimum_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, vocab_size=100)

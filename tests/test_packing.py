import torch
from transformers import LlamaForCausalLM

from reasonlab.llama.configs import preset
from reasonlab.llama.packing import (
    Document, document_attention_mask, loss_targets, pack_documents, position_ids_from_docs,
)


def _model(attn="sdpa"):
    torch.manual_seed(0)
    cfg = preset("tiny-0.5m", vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def test_pack_split_and_whole():
    docs = [Document([0, 5, 6, 7, 1]), Document([0, 8, 9, 1]), Document([0, 10, 1])]
    p = pack_documents(docs, 4, pad_id=2, split_documents=True)
    assert p.input_ids.tolist() == [[0, 5, 6, 7], [1, 0, 8, 9], [1, 0, 10, 1]]
    assert p.doc_ids.tolist() == [[0, 0, 0, 0], [0, 1, 1, 1], [1, 2, 2, 2]]
    w = pack_documents(docs, 6, pad_id=2, split_documents=False)
    assert w.input_ids.tolist() == [[0, 5, 6, 7, 1, 2], [0, 8, 9, 1, 2, 2], [0, 10, 1, 2, 2, 2]]
    assert w.doc_ids[0].tolist() == [0, 0, 0, 0, 0, -1]
    # no document is split when split_documents=False
    for d in range(3):
        rows = {i for i, r in enumerate(w.doc_ids.tolist()) if d in r}
        assert len(rows) == 1


def test_keep_whole_pads_instead_of_cutting_a_document_that_fits():
    docs = [Document([0, 5, 6, 1]), Document([0, 8, 9, 1]), Document([0, 3, 4, 5, 6, 7, 1]),
            Document([0, 10, 1])]
    p = pack_documents(docs, 6, pad_id=2, split_documents=True, keep_whole=True)
    # doc 1 would be cut after 2 tokens: row 0 is padded; doc 2 (7 tokens) is longer than a row
    # and continues across rows as before; doc 3 (3 tokens) does not fit in the 1 left of row 2
    assert p.input_ids.tolist() == [[0, 5, 6, 1, 2, 2], [0, 8, 9, 1, 0, 3], [4, 5, 6, 7, 1, 2],
                                    [0, 10, 1, 2, 2, 2]]
    assert p.doc_ids[0].tolist() == [0, 0, 0, 0, -1, -1]
    assert p.doc_ids[2].tolist() == [2, 2, 2, 2, 2, -1]
    for d in (0, 1, 3):
        assert len({i for i, r in enumerate(p.doc_ids.tolist()) if d in r}) == 1
    # without keep_whole the same documents are cut wherever a row ends
    cut = pack_documents(docs, 6, pad_id=2, split_documents=True)
    assert cut.input_ids[0].tolist() == [0, 5, 6, 1, 0, 8]


def test_positions_restart_and_targets_stay_inside_documents():
    doc = torch.tensor([[0, 0, 0, 1, 1, -1]])
    assert position_ids_from_docs(doc).tolist() == [[0, 1, 2, 0, 1, 0]]
    p = pack_documents([Document([0, 5, 6]), Document([0, 7, 1])], 8, pad_id=2)
    _, mask = loss_targets(p)
    # targets: 5, 6 (doc 0), 7, 1 (doc 1); never the bos of doc 1 predicted from doc 0, never padding
    assert mask.tolist() == [[True, True, False, True, True, False, False]]


def test_document_mask_isolates_documents():
    torch.manual_seed(1)
    a = torch.randint(3, 64, (7,))
    b = torch.randint(3, 64, (9,))
    doc = torch.tensor([[0] * 7 + [1] * 9])
    pos = position_ids_from_docs(doc)
    for attn in ("sdpa", "eager"):
        m = _model(attn)
        with torch.no_grad():
            ids = torch.cat([a, b])[None]
            packed = m(input_ids=ids, attention_mask=document_attention_mask(doc), position_ids=pos).logits
            alone = m(input_ids=b[None]).logits
            ids2 = torch.cat([torch.randint(3, 64, (7,)), b])[None]
            packed2 = m(input_ids=ids2, attention_mask=document_attention_mask(doc), position_ids=pos).logits
        # B packed equals B alone; editing A leaves B's logits unchanged
        torch.testing.assert_close(packed[0, 7:], alone[0], atol=1e-5, rtol=1e-5)
        assert (packed2[0, 7:] - packed[0, 7:]).abs().max().item() < 1e-6
        assert (packed2[0, :7] - packed[0, :7]).abs().max().item() > 1e-3  # A itself did change


def test_restarting_positions_alone_do_not_isolate():
    """Documents the pitfall the 4D mask exists for (the spec measured it)."""
    torch.manual_seed(2)
    m = _model()
    b = torch.randint(3, 64, (9,))
    doc = torch.tensor([[0] * 7 + [1] * 9])
    pos = position_ids_from_docs(doc)
    with torch.no_grad():
        x1 = m(input_ids=torch.cat([torch.randint(3, 64, (7,)), b])[None], position_ids=pos).logits
        x2 = m(input_ids=torch.cat([torch.randint(3, 64, (7,)), b])[None], position_ids=pos).logits
    assert (x1[0, 7:] - x2[0, 7:]).abs().max().item() > 1e-3

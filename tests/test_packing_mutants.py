"""Packing details pinned value by value: the row accessors, the default mode, the shortest row,
padding targets, a document that exactly fills a row, the plain-causal shortcut and the
loss targets."""

from __future__ import annotations

import pytest
import torch

from reasonlab.llama.packing import (
    Document, loss_targets, needs_document_mask, pack_documents,
)


def test_rows_seq_len_and_select():
    p = pack_documents([Document([5, 6, 7]), Document([8, 9])], 2, pad_id=0)
    assert len(p) == 3 and p.seq_len == 2
    assert p.input_ids.tolist() == [[5, 6], [7, 8], [9, 0]]
    s = p.select([2, 0])
    assert s.input_ids.tolist() == [[9, 0], [5, 6]]
    assert s.doc_ids.tolist() == [[1, -1], [0, 0]]
    assert s.target_mask.tolist() == [[True, False], [True, True]]
    assert len(s) == 2 and s.seq_len == 2
    with pytest.raises(ValueError, match="at least 2"):
        pack_documents([Document([5, 6, 7])], 1, pad_id=0)


def test_default_mode_splits_documents_across_rows():
    p = pack_documents([Document([1, 2, 3]), Document([4, 5, 6])], 4, pad_id=0)
    assert p.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]


def test_padding_is_never_a_target_and_explicit_masks_are_kept():
    p = pack_documents([Document([1, 2, 3], [False, True, True])], 5, pad_id=0)
    assert p.target_mask.tolist() == [[False, True, True, False, False]]
    with pytest.raises(ValueError, match="target_mask has 2 entries for 3 ids"):
        pack_documents([Document([1, 2, 3], [True, True])], 5, pad_id=0)
    with pytest.raises(ValueError, match="no tokens"):
        pack_documents([Document([])], 5, pad_id=0)


def test_whole_documents_that_exactly_fill_a_row_share_it():
    w = pack_documents([Document([1, 2, 3]), Document([4, 5, 6]), Document([7])], 6, pad_id=0,
                       split_documents=False)
    assert w.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]]
    assert w.doc_ids.tolist() == [[0, 0, 0, 1, 1, 1], [2, -1, -1, -1, -1, -1]]


def test_needs_document_mask():
    assert needs_document_mask(torch.tensor([[0, 0, 0], [1, 1, 1]])) is False
    assert needs_document_mask(torch.tensor([[3, 3, 3]])) is False
    assert needs_document_mask(torch.tensor([[0, 0, 1], [2, 2, 2]])) is True  # two documents
    assert needs_document_mask(torch.tensor([[0, 1, 1]])) is True
    assert needs_document_mask(torch.tensor([[1, 1, 2]])) is True
    assert needs_document_mask(torch.tensor([[-1, -1, -1]])) is True  # all padding
    assert needs_document_mask(torch.tensor([[0, 0]])) is False


def test_loss_targets_are_the_next_tokens():
    p = pack_documents([Document([5, 6, 7]), Document([8, 9])], 6, pad_id=0)
    targets, mask = loss_targets(p)
    assert targets.tolist() == [[6, 7, 8, 9, 0]]
    assert mask.tolist() == [[True, True, False, True, False]]

"""Packing documents into fixed-length sequences with document masking (Llama 3 §3.2).

A packed row holds several documents. Each token carries its document id (``-1`` for padding) and
whether it is a training target. :func:`document_attention_mask` builds the 4D block-diagonal causal
mask (B, 1, T, T) that stops attention across document boundaries; position ids restart at each
document. Measured with transformers 5.x: restarting positions alone does NOT isolate documents
under sdpa/eager — the 4D mask does (tests/test_packing.py checks both properties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class Document:
    """Token ids of one document and which tokens are training targets (None: all)."""

    ids: list[int]
    target_mask: list[bool] | None = None


@dataclass
class PackedSequences:
    input_ids: torch.Tensor  # (N, T) long
    doc_ids: torch.Tensor  # (N, T) long, -1 = padding
    target_mask: torch.Tensor  # (N, T) bool: token t is a target (predicted from t-1)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def select(self, index: torch.Tensor | Sequence[int]) -> "PackedSequences":
        index = torch.as_tensor(index, dtype=torch.long)
        return PackedSequences(self.input_ids[index], self.doc_ids[index], self.target_mask[index])


def pack_documents(docs: Sequence[Document], seq_len: int, pad_id: int, *,
                   split_documents: bool = True, keep_whole: bool = False) -> PackedSequences:
    """Pack ``docs`` in order into rows of ``seq_len`` tokens.

    ``split_documents=True`` (pretraining) fills every row, continuing a document in the next row.
    With ``keep_whole`` a document that fits in one row is never cut: when the current row lacks
    room for it, the row is padded and the document starts the next one (only longer documents
    are continued across rows). A document whose two halves land in different rows cannot teach
    anything that needs both, such as reading back a key planted early in it (passkey retrieval;
    Ding et al. 2024, arXiv:2404.10830, on the cost of such truncations).
    ``split_documents=False`` (SFT) keeps each document whole in one row (first fit in order;
    documents longer than ``seq_len`` are truncated) and pads the rest of a row.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be at least 2")
    rows_ids: list[list[int]] = []
    rows_doc: list[list[int]] = []
    rows_tgt: list[list[bool]] = []
    cur_ids: list[int] = []
    cur_doc: list[int] = []
    cur_tgt: list[bool] = []

    def flush() -> None:
        nonlocal cur_ids, cur_doc, cur_tgt
        if cur_ids:
            pad = seq_len - len(cur_ids)
            rows_ids.append(cur_ids + [pad_id] * pad)
            rows_doc.append(cur_doc + [-1] * pad)
            rows_tgt.append(cur_tgt + [False] * pad)
        cur_ids, cur_doc, cur_tgt = [], [], []

    for d, doc in enumerate(docs):
        ids = list(doc.ids)
        tgt = list(doc.target_mask) if doc.target_mask is not None else [True] * len(ids)
        if len(tgt) != len(ids):
            raise ValueError(f"document {d}: target_mask has {len(tgt)} entries for {len(ids)} ids")
        if not ids:
            continue
        if split_documents:
            if keep_whole and cur_ids and len(cur_ids) + len(ids) > seq_len >= len(ids):
                flush()
            while ids:
                room = seq_len - len(cur_ids)
                take = ids[:room]
                cur_ids += take
                cur_doc += [d] * len(take)
                cur_tgt += tgt[:room]
                ids, tgt = ids[room:], tgt[room:]
                if len(cur_ids) == seq_len:
                    flush()
        else:
            ids, tgt = ids[:seq_len], tgt[:seq_len]
            if len(cur_ids) + len(ids) > seq_len:
                flush()
            cur_ids += ids
            cur_doc += [d] * len(ids)
            cur_tgt += tgt
    flush()
    if not rows_ids:
        raise ValueError("no tokens to pack: the document list is empty")
    return PackedSequences(torch.tensor(rows_ids, dtype=torch.long),
                           torch.tensor(rows_doc, dtype=torch.long),
                           torch.tensor(rows_tgt, dtype=torch.bool))


def position_ids_from_docs(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 at the start of every document segment in a row."""
    B, T = doc_ids.shape
    idx = torch.arange(T, device=doc_ids.device).expand(B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    start_pos = torch.where(starts, idx, torch.zeros_like(idx))
    start_pos = torch.cummax(start_pos, dim=1).values
    return idx - start_pos


def document_attention_mask(doc_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive (B, 1, T, T) mask: 0 where query i may attend key j (same document, j ≤ i), else
    the dtype's minimum. Padding attends only to itself so no row is empty (no NaNs)."""
    B, T = doc_ids.shape
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    allowed = same & causal
    allowed |= torch.eye(T, dtype=torch.bool, device=doc_ids.device)
    mask = torch.zeros(B, 1, T, T, dtype=dtype, device=doc_ids.device)
    return mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)


def needs_document_mask(doc_ids: torch.Tensor) -> bool:
    """False when every row is one document with no padding, so plain causal attention suffices."""
    return bool((doc_ids != doc_ids[:, :1]).any() or (doc_ids < 0).any())


def loss_targets(batch: PackedSequences) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets (N, T-1) and their mask: token t+1 is predicted from t only inside one document."""
    same_doc = batch.doc_ids[:, 1:] == batch.doc_ids[:, :-1]
    mask = batch.target_mask[:, 1:] & same_doc & (batch.doc_ids[:, 1:] >= 0)
    return batch.input_ids[:, 1:], mask

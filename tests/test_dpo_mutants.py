"""Small DPO behaviours the TRL comparisons do not reach: the ε shape check, when the NLL term
is reported, and which prompt token truncation keeps."""

from __future__ import annotations

import pytest
import torch

from reasonlab.training.dpo import EncodedPair, preference_loss, truncate_pair


def _logps():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    rc, rr = torch.tensor([-3.5, -5.0]), torch.tensor([-4.0, -4.0])
    return pc, pr, rc, rr


@pytest.mark.parametrize("shape", [(2, 2), (1, 2), (2, 1, 1)])
def test_label_smoothing_of_more_than_one_dimension_is_refused(shape):
    with pytest.raises(ValueError, match="label_smoothing must be a float or a tensor of shape"):
        preference_loss(*_logps(), chosen_lengths=torch.tensor([2, 2]),
                        rejected_lengths=torch.tensor([2, 2]),
                        label_smoothing=torch.full(shape, 0.1))


def test_label_smoothing_of_the_wrong_length_is_refused():
    for n in (1, 3):
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            preference_loss(*_logps(), chosen_lengths=torch.tensor([2, 2]),
                            rejected_lengths=torch.tensor([2, 2]),
                            label_smoothing=torch.full((n,), 0.1))


def test_nll_is_reported_only_when_weighted():
    lengths = torch.tensor([2, 4])
    plain = preference_loss(*_logps(), chosen_lengths=lengths, rejected_lengths=lengths)
    assert plain.nll is None
    zero = preference_loss(*_logps(), chosen_lengths=lengths, rejected_lengths=lengths,
                           nll_weight=0.0)
    assert zero.nll is None and torch.equal(zero.loss, plain.loss)
    w = preference_loss(*_logps(), chosen_lengths=lengths, rejected_lengths=lengths,
                        nll_weight=0.5)
    # token-level NLL of the chosen completions: (3 + 5) / (2 + 4)
    assert float(w.nll) == pytest.approx(8 / 6)
    assert float(w.loss) == pytest.approx(float(plain.loss) + 0.5 * 8 / 6)


def test_truncation_keeps_the_first_prompt_token_only_when_it_is_the_bos():
    pair = EncodedPair([7, 1, 2, 3, 4, 5], [10, 11], [20, 21, 22])
    # no BOS id: the oldest prompt tokens go, the first among them
    out, cut = truncate_pair(pair, 6)
    assert out.prompt == [3, 4, 5] and cut.prompt_cut == 3
    assert out.chosen == [10, 11] and out.rejected == [20, 21, 22]
    # a BOS id that is not the first token: the same
    assert truncate_pair(pair, 6, bos_token_id=9)[0].prompt == [3, 4, 5]
    # the first token is the BOS: it stays, the body's oldest tokens go
    out, cut = truncate_pair(pair, 6, bos_token_id=7)
    assert out.prompt == [7, 4, 5] and cut.prompt_cut == 3

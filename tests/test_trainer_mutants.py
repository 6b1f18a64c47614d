"""Trainer details pinned: the newest of several complete checkpoints is the one resumed, each
rank trains on its own slice of the step's rows, and only the main rank writes checkpoints."""

from __future__ import annotations

import dataclasses

import pytest

import reasonlab.llama.trainer as T
from test_trainer_core import _cfg, _data, _model


def test_latest_of_three_complete_checkpoints_is_the_newest(tmp_path):
    from reasonlab.runs import Run

    cfg = _cfg()
    tr = T.Trainer(cfg, _model(), _data(), None, Run(tmp_path / "r", config=cfg, seed=cfg.seed))
    root = tmp_path / "r" / "checkpoints"
    for step in (12, 3, 7, 30):
        (root / f"step_{step:07d}").mkdir(parents=True)
        if step != 30:  # incomplete
            (root / f"step_{step:07d}" / "state.json").write_text("{}")
    assert tr.latest_checkpoint().name == "step_0000012"


class _Rows:
    """The training rows, recording which are selected."""

    def __init__(self, data):
        self.data, self.calls = data, []

    def __len__(self):
        return len(self.data)

    def select(self, rows):
        rows = list(rows)
        self.calls.append(rows)
        return self.data.select(rows)


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_trains_on_its_own_half_of_the_step(rank, monkeypatch):
    monkeypatch.setattr(T.D, "all_reduce_sum", lambda x, info: x)  # one process stands for two
    tr = T.Trainer(_cfg(batch_size=4), _model(), _data(), None, None)
    tr.info = dataclasses.replace(tr.info, rank=rank, world_size=2)
    rows = _Rows(tr.train_data)
    tr.train_data = rows
    idx = tr.batch_indices(4)
    tr.train_step()
    assert rows.calls[0] == idx[2 * rank:2 * rank + 2]
    assert tr.state.cursor == 4


def test_only_the_main_rank_writes_checkpoints(tmp_path, monkeypatch):
    from reasonlab.runs import Run

    barriers = []
    monkeypatch.setattr(T.D, "barrier", lambda info: barriers.append(info.rank))
    cfg = _cfg()
    tr = T.Trainer(cfg, _model(), _data(), None, Run(tmp_path / "r", config=cfg, seed=cfg.seed))
    root = tmp_path / "r" / "checkpoints"
    tr.info = dataclasses.replace(tr.info, rank=1, world_size=2)
    tr.save_checkpoint()
    assert sorted(p.name for p in root.glob("*")) == [] and barriers == [1]
    tr.info = dataclasses.replace(tr.info, rank=0)
    tr.save_checkpoint()
    assert sorted(p.name for p in root.glob("*")) == ["step_0000000"] and barriers == [1, 0]

"""Reasoning by search: MCTS over reasoning steps (:mod:`~reasonlab.reasoning.mcts`), the
iterative MCTS-DPO loop (:mod:`~reasonlab.reasoning.mcts_dpo`, ``reasonlab mcts-dpo``) and an
HTML view of one search (:mod:`~reasonlab.reasoning.tree_view`)."""

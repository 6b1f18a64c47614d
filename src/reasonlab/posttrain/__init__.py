"""Llama 3 post-training after SFT: rejection sampling → [RS-SFT] → DPO → weight averaging
(arXiv:2407.21783 §4).

The method's parts, one module each: :mod:`~reasonlab.posttrain.config` (sampling, the
per-command jobs, the whole loop), :mod:`~reasonlab.posttrain.rewards` (the answer verifier and
the step check), :mod:`~reasonlab.posttrain.sampling` (rejection sampling and the best sample per
prompt), :mod:`~reasonlab.posttrain.pairs` (DPO pairs and step pairs),
:mod:`~reasonlab.posttrain.runner` (RS-SFT, DPO and the loop with held-out evaluation) and
:mod:`~reasonlab.posttrain.cli` (``reasonlab posttrain ...``). The DPO loss and loop live in
:mod:`reasonlab.training.dpo` and weight averaging in :mod:`reasonlab.training.averaging`, where
any method can use them.
"""

from reasonlab.evals.skillmath_eval import pooled_accuracy
from reasonlab.posttrain.config import (
    PAIR_UNITS,
    REWARDS,
    AverageJob,
    DPOJob,
    PosttrainConfig,
    RejectionJob,
    RSSFTJob,
    SamplingConfig,
    llama3_dpo_config,
    rs_sft_config,
)
from reasonlab.posttrain.pairs import build_pairs, dpo_inputs, mean_logprob, read_pairs, step_pair
from reasonlab.posttrain.rewards import Reward, step_reward, verifier_reward
from reasonlab.posttrain.runner import run_dpo, run_posttrain, run_rs_sft
from reasonlab.posttrain.sampling import best_samples, rejection_sample, run_rejection_sampling
from reasonlab.training.averaging import average_models, average_state_dicts

__all__ = [
    "PAIR_UNITS", "REWARDS", "AverageJob", "DPOJob", "PosttrainConfig", "RejectionJob", "RSSFTJob",
    "Reward", "SamplingConfig", "average_models", "average_state_dicts", "best_samples",
    "build_pairs", "dpo_inputs", "llama3_dpo_config", "mean_logprob", "pooled_accuracy",
    "read_pairs", "rejection_sample", "rs_sft_config", "run_dpo", "run_posttrain",
    "run_rejection_sampling", "run_rs_sft", "step_pair", "step_reward", "verifier_reward",
]

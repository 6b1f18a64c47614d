"""Rules between two config keys are checked at load and refused naming both keys and both values
(nested sections with the key a user sets, e.g. ``train.warmup_steps``)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import ConfigError, check_order, load_config

runner = CliRunner()


def _both(msg: str, a: str, va, b: str, vb) -> bool:
    """Whether ``msg`` names key ``a`` with value ``va`` and key ``b`` with value ``vb``."""
    return all(re.search(rf"'{re.escape(k)}' = {re.escape(repr(v))}(?![\w.])", msg) is not None
               for k, v in ((a, va), (b, vb)))


def test_check_order_names_both_keys_and_values():
    check_order("a", 3, "b", 3)
    with pytest.raises(ConfigError) as e:
        check_order("a", 3, "b", 3, strict=True)
    assert _both(str(e.value), "a", 3, "b", 3)
    with pytest.raises(ConfigError) as e:
        check_order("warmup_steps", 9, "max_steps", 4)
    assert _both(str(e.value), "warmup_steps", 9, "max_steps", 4) and "<=" in str(e.value)


def _classes():
    from reasonlab.data.skillmath import SkillMathConfig
    from reasonlab.evals.accuracy import AccuracyConfig
    from reasonlab.evals.creativity_runner import CreativityConfig
    from reasonlab.evals.ntk import NTKConfig
    from reasonlab.llama.jobs import PretrainJob, SFTJob
    from reasonlab.llama.pretrain import PretrainConfig
    from reasonlab.llama.sft import SFTConfig
    from reasonlab.optim.compare import CompareConfig as OptimCompare
    from reasonlab.peft.compare import CompareConfig as BLoRACompare
    from reasonlab.posttrain import PosttrainConfig, RSSFTJob
    from reasonlab.solver import SolverConfig
    from reasonlab.training.dpo import DPOConfig
    from reasonlab.vision.runner import MultimodalConfig

    return locals()


# (config class, --set overrides, (key, value), (other key, value))
CASES = [
    ("PretrainConfig", ["max_steps=30", "warmup_steps=31"], ("warmup_steps", 31), ("max_steps", 30)),
    ("SFTConfig", ["max_steps=10"], ("warmup_steps", 20), ("max_steps", 10)),
    ("PretrainJob", ["train.max_steps=3"], ("train.warmup_steps", 50), ("train.max_steps", 3)),
    ("SFTJob", ["train.max_steps=5", "train.warmup_steps=6"],
     ("train.warmup_steps", 6), ("train.max_steps", 5)),
    ("PosttrainConfig", ["rs_sft.max_steps=3", "rs_sft.warmup_steps=4"], ("rs_sft.warmup_steps", 4),
     ("rs_sft.max_steps", 3)),
    ("RSSFTJob", ["sft.max_steps=2", "sft.warmup_steps=5"], ("sft.warmup_steps", 5),
     ("sft.max_steps", 2)),
    ("SolverConfig", ["sft_k1.max_steps=10", "sft_k1.warmup_steps=11"],
     ("sft_k1.warmup_steps", 11), ("sft_k1.max_steps", 10)),
    ("SolverConfig", ["pretrain.max_steps=40"], ("pretrain.warmup_steps", 50),
     ("pretrain.max_steps", 40)),
    ("SolverConfig", ["pretrain.batch_size=6", "pretrain.micro_batch_size=4"],
     ("pretrain.batch_size", 6), ("pretrain.micro_batch_size", 4)),
    ("CreativityConfig", ["max_steps=6"], ("warmup_steps", 30), ("max_steps", 6)),
    ("CreativityConfig", ["n_heads=2", "n_kv_heads=4"], ("n_kv_heads", 4), ("n_heads", 2)),
    ("CreativityConfig", ["total_works=4", "ns=[2,8]"], ("ns[1]", 8), ("total_works", 4)),
    ("BLoRACompare", ["steps=20", "warmup_steps=21"], ("warmup_steps", 21), ("steps", 20)),
    ("BLoRACompare", ["adalora_target_r=16", "adalora_init_r=12"],
     ("adalora_target_r", 16), ("adalora_init_r", 12)),
    ("BLoRACompare", ["steps=5", "warmup_steps=1", "methods=[adalora]"], ("steps", 5),
     ("methods", ["adalora"])),
    ("SkillMathConfig", ["min_number=50", "max_number=20"], ("min_number", 50), ("max_number", 20)),
    ("SkillMathConfig", ["max_number=200", "max_answer=100"], ("max_number", 200), ("max_answer", 100)),
    ("SolverConfig", ["data.min_number=50", "data.max_number=20"],
     ("data.min_number", 50), ("data.max_number", 20)),
    ("NTKConfig", ["n_train=4", "n_shots=8"], ("n_shots", 8), ("n_train", 4)),
    ("NTKConfig", ["max_number=200", "max_answer=100"], ("max_number", 200), ("max_answer", 100)),
    ("MultimodalConfig", ["encoder.image_size=16", "encoder.patch_size=32"],
     ("encoder.patch_size", 32), ("encoder.image_size", 16)),
    ("MultimodalConfig", ["encoder.patch_size=3"], ("encoder.patch_size", 3), ("encoder.image_size", 16)),
    ("MultimodalConfig", ["encoder.hidden_size=64", "encoder.attention_heads=5"],
     ("encoder.attention_heads", 5), ("encoder.hidden_size", 64)),
    ("AccuracyConfig", ["k=4", "temperature=0"], ("k", 4), ("temperature", 0.0)),
    ("DPOConfig", ["loss_type=ipo", "label_smoothing=0.1"], ("label_smoothing", 0.1),
     ("loss_type", "ipo")),
    ("OptimCompare", ["learned.a=x", "tune_seeds=[1,2]", "test_seeds=[2,3]"],
     ("test_seeds", [2, 3]), ("tune_seeds", [1, 2])),
]


@pytest.mark.parametrize("cls,sets,first,second", CASES, ids=[f"{c[0]}:{c[1][-1]}" for c in CASES])
def test_cross_key_rule_names_both_keys_and_values(cls, sets, first, second):
    with pytest.raises(ConfigError) as e:
        load_config(_classes()[cls], None, sets)
    msg = str(e.value)
    assert "\n" not in msg
    assert _both(msg, *first, *second), msg


def test_attention_heads_zero_is_a_range_error_not_a_crash():
    from reasonlab.vision.runner import MultimodalConfig

    with pytest.raises(ConfigError, match=r"'encoder.attention_heads' = 0 is out of range"):
        load_config(MultimodalConfig, None, ["encoder.attention_heads=0"])


def test_rules_at_their_bound_are_accepted():
    c = _classes()
    assert load_config(c["PretrainConfig"], None, ["max_steps=5", "warmup_steps=5"]).warmup_steps == 5
    assert load_config(c["CreativityConfig"], None, ["n_heads=4", "n_kv_heads=4"]).n_kv_heads == 4
    assert load_config(c["SkillMathConfig"], None, ["min_number=20", "max_number=20"]).max_number == 20
    assert load_config(c["NTKConfig"], None, ["n_train=8", "n_shots=8"]).n_shots == 8
    assert load_config(c["BLoRACompare"], None, ["adalora_target_r=8", "adalora_init_r=8"])


def test_cli_refuses_warmup_beyond_max_steps_before_writing(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["pretrain", "--out", str(out), "--set", "train.preset=tiny-0.5m",
                            "--set", "train.max_steps=3"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    line = [x for x in r.output.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and _both(line[0], "train.warmup_steps", 50, "train.max_steps", 3)
    assert not out.exists()

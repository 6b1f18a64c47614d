"""The comparison runner (tuning, settings, statistics, table, plots) and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reasonlab.cli import app
from reasonlab.config import ConfigError
from reasonlab.optim.compare import CompareConfig, paired_stats, run_compare, setting_env
from reasonlab.optim.envs import EnvSpec
from reasonlab.optim.l3rs import L3RSConfig, MetaModel

TINY_ENV = {"batch_size": 32, "hidden": [16], "pretrain_steps": 30}
TINY_SETS = ["es.steps=2", "es.pairs=2", "es.horizon=15", "es.workers=1", "es.train_seeds=[0,1]",
             "env.options.batch_size=32", "env.options.hidden=[16]",
             "env.options.pretrain_steps=30"]


def _r(loss, acc=0.9):
    return {"mean_loss": loss, "test_acc": acc, "final_loss": loss / 2, "diverged": False}


def test_paired_stats_numbers():
    base = [_r(x, 0.90) for x in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    ours = [_r(x / 2, 0.91) for x in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    st = paired_stats(ours, base)
    assert st["train_loss_reduction"] == pytest.approx(0.5)
    assert st["test_acc_delta"] == pytest.approx(1.0)
    assert st["wins"] == 6 and st["n"] == 6
    assert st["wilcoxon_p"] == pytest.approx(2 / 2**6)  # exact two-sided, all 6 pairs one way
    assert st["acc_wilcoxon_p"] == pytest.approx(2 / 2**6)
    assert paired_stats(base, base)["wilcoxon_p"] == 1.0


def test_settings():
    env = EnvSpec("digits", {"batch_size": 32})
    assert setting_env(env, 100, "long3x") == (env, 300)
    e, h = setting_env(env, 100, "shift")
    assert e.options == {"batch_size": 32, "variant": "shift"} and h == 100
    assert setting_env(env, 100, "unseen_init")[0].options["pretrain_recipe"] == "sgd_long"


def test_config_validation():
    with pytest.raises(ConfigError, match="overlap"):
        CompareConfig(learned={"a": "x"}, tune_seeds=[1, 2], test_seeds=[2, 3])
    with pytest.raises(ConfigError, match="learned"):
        CompareConfig()
    with pytest.raises(ConfigError, match="baselines"):
        CompareConfig(learned={"a": "x"}, baselines=["adamw"])
    assert CompareConfig(learned={"a": "x", "b": "y"}).reference == "a"


def test_run_compare_end_to_end_and_resume(tmp_path):
    cfg = L3RSConfig(directions=["sgd", "adam"], base_lr=0.003, state_features=False)
    good = MetaModel.fixed(cfg, 4, mix={"adam": 1.0})
    tiny = MetaModel(L3RSConfig(directions=["sgd"], base_lr=1e-5, state_features=False), 4)
    good.save(tmp_path / "good.safetensors")
    tiny.save(tmp_path / "tiny.safetensors")
    cc = CompareConfig(env=EnvSpec("digits", TINY_ENV), horizon=15,
                       baselines=["adam", "sgd_momentum"], tune_budget=8, tune_seeds=[0, 1],
                       test_seeds=[100, 101, 102], settings=["main", "long3x"], workers=1,
                       learned={"good": str(tmp_path / "good.safetensors"),
                                "tiny": str(tmp_path / "tiny.safetensors")})
    out = tmp_path / "cmp"
    res = run_compare(cc, out, progress=False)
    assert res["tune_budget"] == 8
    tuning = json.loads((out / "tuning.json").read_text())
    assert tuning["adam"]["inner_runs"] <= 8 and tuning["adam"]["n_configs"] == 4
    main = res["settings"]["main"]
    assert main["best_baseline"] in ("adam", "sgd_momentum")
    # a near-zero step size barely trains: far worse than the best baseline, loses every seed
    assert main["learned"]["tiny"]["vs_best"]["train_loss_reduction"] < -0.3
    assert main["learned"]["tiny"]["vs_best"]["wins"] == 0
    long = res["settings"]["long3x"]["optimizers"]["good"]
    assert long["final_train_loss"] < main["optimizers"]["good"]["final_train_loss"]
    table = (out / "table.md").read_text()
    assert "| main | good |" in table and "| long3x | tiny |" in table
    for s in ("main", "long3x"):
        assert (out / f"curves_{s}.png").stat().st_size > 1000
    curves = json.loads((out / "eval_main.json").read_text())
    assert len(curves["good"]) == 3 and len(curves["good"][0]["losses"]) == 15
    mtime = (out / "eval_main.json").stat().st_mtime_ns
    again = run_compare(cc, out, progress=False)  # resumed: nothing recomputed
    assert (out / "eval_main.json").stat().st_mtime_ns == mtime
    assert again["settings"]["main"]["optimizers"] == main["optimizers"]


def test_cli_meta_train_and_compare(tmp_path):
    runner = CliRunner()
    meta_dir = tmp_path / "meta"
    r = runner.invoke(app, ["optimizer", "meta-train", "--no-progress", "-o", str(meta_dir)]
                      + [x for s in TINY_SETS for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    assert (meta_dir / "meta.safetensors").exists()
    assert json.loads((meta_dir / "results.json").read_text())["inner_runs"] == 8
    sets = ["horizon=15", "baselines=[adam]", "tune_seeds=[0,1]", "test_seeds=[50,51]",
            "settings=[main]", "workers=1", "env.options.batch_size=32",
            "env.options.hidden=[16]", "env.options.pretrain_steps=30"]
    r = runner.invoke(app, ["optimizer", "compare", "--no-progress", "-o", str(tmp_path / "c"),
                            "-l", f"l3rs={meta_dir}"] + [x for s in sets for x in ("--set", s)])
    assert r.exit_code == 0, r.output
    assert "| main | l3rs |" in r.output
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert res["tune_budget"] == 8  # the meta-training's inner runs
    bad = runner.invoke(app, ["optimizer", "compare", "-o", str(tmp_path / "d"), "-l", "oops"])
    assert bad.exit_code == 2 and "LABEL=PATH" in bad.output
    bad = runner.invoke(app, ["optimizer", "meta-train", "-o", str(tmp_path / "e"),
                              "--set", "es.sigma=-1"])
    assert bad.exit_code == 2 and "es.sigma" in bad.output

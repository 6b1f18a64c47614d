"""The model cache: one builder under a lock, atomic publish, verified loads, recipe lookup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reasonlab.models import cache
from reasonlab.models.recipes import Recipe, config_hash, get_recipe, register, unregister

# A recipe defined in a helper module, so that subprocesses can register it too. Its build
# appends a line to builds.log, writes a marker, then sleeps $CACHE_TEST_SLEEP seconds before writing
# the weights (so another process can be made to wait on the lock, or the build be killed).
HELPER = textwrap.dedent("""
    import os, sys, time
    from dataclasses import dataclass
    from pathlib import Path
    from reasonlab.models.recipes import Recipe, register

    @dataclass
    class FakeConfig:
        size: int = 64

    def build(cfg, out_dir):
        log = Path(os.environ["CACHE_TEST_DIR"])
        with open(log / "builds.log", "a") as f:
            f.write(f"{os.getpid()}\\n")
        (out_dir / "config.json").write_text('{"size": %d}' % cfg.size)
        (log / f"started-{os.getpid()}").write_text("")
        time.sleep(float(os.environ.get("CACHE_TEST_SLEEP", "0")))
        (out_dir / "model.safetensors").write_bytes(bytes(range(256)) * cfg.size)

    def setup():
        register(Recipe(name="fake-test", config=FakeConfig(), build=build,
                        micro_config=FakeConfig(size=2), description="test recipe"))

    if __name__ == "__main__":
        import logging
        logging.basicConfig(level=logging.INFO)
        setup()
        from reasonlab.models.cache import model_path
        print("PATH", model_path("fake-test"), flush=True)
""")


@pytest.fixture
def env(tmp_path, monkeypatch):
    helper = tmp_path / "cache_helper.py"
    helper.write_text(HELPER)
    monkeypatch.setenv("REASONLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CACHE_TEST_DIR", str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    cache._verified.clear()
    import importlib

    mod = importlib.import_module("cache_helper")
    mod = importlib.reload(mod)
    mod.setup()
    yield tmp_path, helper, mod
    unregister("fake-test")
    cache._verified.clear()


def _spawn(helper: Path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(helper)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CACHE_TEST_SLEEP": str(sleep)})


def _wait_for(pred, timeout: float = 60.0) -> None:
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def _builds(tmp_path: Path) -> list[str]:
    p = tmp_path / "builds.log"
    return p.read_text().split() if p.exists() else []


def test_second_process_waits_on_the_lock_and_gets_the_first_model(env):
    tmp_path, helper, _ = env
    first = _spawn(helper, 3.0)
    _wait_for(lambda: any(tmp_path.glob("started-*")))
    second = _spawn(helper, 3.0)  # the same recipe, started while the first builds it
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert _builds(tmp_path) == [str(first.pid)]  # built once, by the first process
    path1 = out1.split("PATH ")[1].strip()
    path2 = out2.split("PATH ")[1].strip()
    assert path1 == path2
    weights = Path(path2) / "model.safetensors"
    assert weights.read_bytes() == bytes(range(256)) * 64
    assert "waiting for another process" in err2


def test_killed_build_is_not_published_and_is_rebuilt(env):
    tmp_path, helper, mod = env
    proc = _spawn(helper, 60.0)
    _wait_for(lambda: any(tmp_path.glob("started-*")))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    models = tmp_path / "cache" / "models"
    published = [p for p in models.iterdir() if not p.name.startswith(".")]
    assert published == []  # only the temporary folder of the killed build is left
    assert any(p.name.startswith(".tmp-fake-test-") for p in models.iterdir())
    mod.setup()
    path = cache.model_path("fake-test")
    assert (path / "model.safetensors").stat().st_size == 256 * 64
    assert len(_builds(tmp_path)) == 2
    assert not any(p.name.startswith(".tmp-") for p in models.iterdir())  # stale build removed
    # a killed build of another entry is removed too once its lock is free
    other = models / ".tmp-other-0123456789abcdef-99999-deadbeef"
    (other / "model").mkdir(parents=True)
    (models / ".locks" / "other-0123456789abcdef.lock").touch()
    cache._verified.clear()
    (path.parent / "manifest.json").unlink()
    cache.model_path("fake-test")
    assert not other.exists()
    man = json.loads((path.parent / "manifest.json").read_text())
    assert man["config_hash"] == config_hash(get_recipe("fake-test"))
    assert set(man["files"]) == {"config.json", "model.safetensors"}


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_manifest", "bad_manifest"])
def test_corrupt_entry_is_detected_and_rebuilt(env, damage):
    tmp_path, _, mod = env
    mod.setup()
    path = cache.model_path("fake-test")
    assert cache.model_path("fake-test") == path and len(_builds(tmp_path)) == 1  # cached
    w, man = path / "model.safetensors", path.parent / "manifest.json"
    if damage == "flip_byte":
        data = bytearray(w.read_bytes())
        data[100] ^= 0xFF
        w.write_bytes(bytes(data))
        assert "SHA-256 of model.safetensors" in cache.verify_entry(path.parent)
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[:1000])
        assert "size of model.safetensors" in cache.verify_entry(path.parent)
    elif damage == "drop_manifest":
        man.unlink()
    else:
        man.write_text("{not json")
    cache._verified.clear()  # a new process
    again = cache.model_path("fake-test")
    assert again == path and len(_builds(tmp_path)) == 2
    assert w.read_bytes() == bytes(range(256)) * 64
    assert cache.verify_entry(path.parent) is None


def test_micro_variant_and_config_hash(env):
    tmp_path, _, mod = env
    mod.setup()
    micro = cache.model_path("fake-test", micro=True)
    full = cache.model_path("fake-test")
    assert micro != full and "-micro-" in micro.parent.name
    assert (micro / "model.safetensors").stat().st_size == 256 * 2
    r = get_recipe("fake-test")
    assert config_hash(r) != config_hash(r, micro=True)
    other = Recipe(name="fake-test", config=type(r.config)(size=65), build=r.build)
    assert config_hash(other) != config_hash(r)
    with pytest.raises(ValueError, match="already registered"):
        register(other)


def test_unknown_recipe_lists_the_known_ones(env, tmp_path):
    with pytest.raises(KeyError, match="known recipes: .*solver-addsub"):
        cache.model_path("no-such-model")
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a known recipe.*"
                                                "fake-test"):
        cache.resolve_model("no-such-model")
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        cache.resolve_model(str(folder))
    (folder / "config.json").write_text("{}")
    assert cache.resolve_model(str(folder)) == folder
    assert cache.resolve_model("fake-test:micro").parent.name.startswith("fake-test-micro-")


def test_unwritable_cache_folder_is_named(env, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the cache folder should be: no one can write there
    monkeypatch.setenv("REASONLAB_CACHE", str(blocker))
    with pytest.raises(cache.CacheError, match=f"{blocker / 'models'} cannot be written"):
        cache.model_path("fake-test")


def test_cache_root_defaults_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("REASONLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.models_dir() == tmp_path / "reasonlab" / "models"
    monkeypatch.setenv("REASONLAB_CACHE", str(tmp_path / "x"))
    assert cache.models_dir() == tmp_path / "x" / "models"


def test_solver_micro_recipe_builds_a_loadable_model(env):
    from reasonlab.lm.local import LocalLM

    path = cache.model_path("solver-addsub", micro=True)
    res = json.loads((path / "solver_results.json").read_text())
    assert res["sft"]["steps"] == 10
    lm = LocalLM.from_pretrained(path, device="cpu")
    assert sum(p.numel() for p in lm.model.parameters()) == res["sft"]["n_params"]
    assert cache.resolve_model("solver-addsub:micro") == path


def test_models_cli(env):
    from typer.testing import CliRunner

    from reasonlab.cli import app

    tmp_path, _, mod = env
    mod.setup()
    r = CliRunner().invoke(app, ["models", "path", "fake-test"])
    assert r.exit_code == 1
    r = CliRunner().invoke(app, ["models", "build", "fake-test"])
    assert r.exit_code == 0, r.output
    built = r.output.strip().splitlines()[-1]
    r = CliRunner().invoke(app, ["models", "path", "fake-test"])
    assert r.exit_code == 0 and r.output.strip() == built
    r = CliRunner().invoke(app, ["models", "list"])
    assert "fake-test" in r.output and "solver-addsub" in r.output
    r = CliRunner().invoke(app, ["models", "build", "nope"])
    assert r.exit_code == 2 and "known recipes" in r.output


def test_config_hash_ignores_new_fields_left_at_their_default():
    """A field added to a config class later (with a default) keeps every cached model's key;
    setting it, or changing any value a recipe sets, changes the key."""
    import dataclasses

    @dataclasses.dataclass
    class Inner:
        lr: float = 0.1

    @dataclasses.dataclass
    class Old:
        size: int
        inner: Inner = dataclasses.field(default_factory=Inner)

    @dataclasses.dataclass
    class New:
        size: int
        inner: Inner = dataclasses.field(default_factory=Inner)
        stages: list = dataclasses.field(default_factory=list)

    Old.__name__ = New.__name__ = "Cfg"

    def h(cfg):
        return config_hash(Recipe(name="hash-test", config=cfg, build=lambda c, d: None))

    assert h(Old(size=3)) == h(New(size=3))
    assert h(New(size=3, stages=[(64, 10)])) != h(New(size=3))
    assert h(New(size=3, inner=Inner(lr=0.2))) != h(New(size=3))
    assert h(Old(size=4)) != h(Old(size=3))

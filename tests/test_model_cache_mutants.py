"""Model cache details pinned: build times in the manifest, its layout, leftovers that cannot be
removed, entry names and the full/micro split of ``is_built`` and ``manifest``."""

from __future__ import annotations

import json
import time
import types
from dataclasses import dataclass

import pytest

from reasonlab.models import cache
from reasonlab.models.recipes import Recipe, register, unregister

CLOCK = {"wall": 1000.0, "cpu": 5.0}


@dataclass
class _Cfg:
    size: int = 3


def _build(cfg, out_dir):
    (out_dir / "config.json").write_text(json.dumps({"size": cfg.size}))
    (out_dir / "w.bin").write_bytes(bytes(range(cfg.size)))
    CLOCK["wall"] += 1.23456
    CLOCK["cpu"] += 0.98765


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONLAB_CACHE", str(tmp_path / "cache"))
    cache._verified.clear()
    register(Recipe(name="fake-mut", config=_Cfg(), build=_build, micro_config=_Cfg(size=2),
                    description="test recipe"))
    yield tmp_path / "cache" / "models"
    unregister("fake-mut")
    cache._verified.clear()


def test_manifest_records_build_times_to_the_millisecond(recipe, monkeypatch):
    fake = types.SimpleNamespace(time=lambda: CLOCK["wall"], process_time=lambda: CLOCK["cpu"],
                                 strftime=time.strftime, gmtime=time.gmtime, sleep=time.sleep)
    monkeypatch.setattr(cache, "time", fake)
    cache.model_path("fake-mut")
    man = cache.manifest("fake-mut")
    assert man["build_wall_s"] == 1.235 and man["build_cpu_s"] == 0.988
    assert man["files"]["w.bin"]["size"] == 3 and man["micro"] is False


def test_manifest_file_is_indented_json(recipe):
    path = cache.model_path("fake-mut")
    text = (path.parent / cache.MANIFEST).read_text()
    assert text == json.dumps(json.loads(text), indent=2)
    assert text.startswith('{\n  "format": ')


def test_leftovers_that_cannot_be_removed_do_not_stop_a_build(recipe, tmp_path):
    name = cache.entry_name("fake-mut")
    recipe.mkdir(parents=True)
    (recipe / f".tmp-{name}-1-0badf00d").write_text("a file, not a folder")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    (recipe / ".tmp-ghost-1-0badf00d").symlink_to(target)
    (recipe / ".locks").mkdir()
    (recipe / ".locks" / "ghost.lock").write_text("")
    path = cache.model_path("fake-mut")
    assert (path / "w.bin").read_bytes() == bytes(range(3))
    assert (target / "keep.txt").read_text() == "x"  # a link is never followed


def test_entry_names_and_the_micro_split(recipe):
    micro = cache.model_path("fake-mut", micro=True)
    assert micro.parent.name == cache.entry_name("fake-mut", True)
    assert cache.is_built("fake-mut", micro=True) and not cache.is_built("fake-mut")
    assert cache.manifest("fake-mut") is None and cache.manifest("fake-mut", micro=True)["micro"]
    full = cache.model_path("fake-mut")
    name = full.parent.name
    assert name == cache.entry_name("fake-mut") and cache.is_built("fake-mut")
    assert name.startswith("fake-mut-") and len(name) == len("fake-mut-") + 16
    assert cache.manifest("fake-mut")["config_hash"].startswith(name[-16:])


def test_lock_makes_its_missing_folders(tmp_path):
    lock = tmp_path / "a" / "b" / ".locks" / "x.lock"
    with cache._locked(lock):
        assert lock.exists()
    with cache._locked(lock):  # a second time: the folders exist already
        pass


def test_manifest_without_config_json_is_rebuilt(recipe):
    path = cache.model_path("fake-mut")
    man_path = path.parent / cache.MANIFEST
    man = json.loads(man_path.read_text())
    del man["files"]["config.json"]
    man_path.write_text(json.dumps(man))
    assert cache.verify_entry(path.parent) == "manifest lists no config.json"
    cache._verified.clear()
    assert cache.model_path("fake-mut") == path
    assert "config.json" in cache.manifest("fake-mut")["files"]
    assert cache.verify_entry(path.parent) is None

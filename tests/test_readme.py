"""Every runnable README example parses against today's CLI and config classes, and the fast
ones run as written; the long ones run under ``-m slow``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from readme_examples import README, examples
from reasonlab.cli import app, command_config_class
from reasonlab.config import load_config, parse_overrides

runner = CliRunner()
REPO = README.parent
ALL = [e for e in examples() if e.runnable]


def _split(argv):
    """(command path, --config file, --set values) of an argv."""
    root = typer.main.get_command(app)
    ctx = root.make_context("reasonlab", ["--help"], resilient_parsing=True)
    path, c = [], root
    while argv and hasattr(c, "get_command") and c.get_command(ctx, argv[0]) is not None:
        c = c.get_command(ctx, argv[0])
        path.append(argv.pop(0))
    config, sets = None, []
    for i, a in enumerate(argv):
        if a in ("-c", "--config") and i + 1 < len(argv):
            config = argv[i + 1]
        if a in ("-s", "--set") and i + 1 < len(argv):
            sets.append(argv[i + 1])
    return path, c, config, sets


def check_example(e) -> None:
    """Parse a CLI example with the real command (unknown options fail) and load its config."""
    argv = list(e.argv)
    path, cmd, config, sets = _split(argv)
    if not path:  # options of reasonlab itself
        root = {o for p in typer.main.get_command(app).params for o in p.opts}
        assert argv and all(a in root for a in argv), f"not a reasonlab command: {e.text}"
        return
    cmd.make_context(" ".join(path), list(argv))  # raises on an unknown option or a bad type
    cls = command_config_class(path)
    if cls is not None and (config or sets):
        parse_overrides(sets)
        try:
            load_config(cls, REPO / config if config else None, sets)
        except ValueError as err:  # a key the command fills from its own options (e.g. -l)
            try:
                load_config(cls)
            except ValueError as bare:
                assert str(err) == str(bare), err
            else:
                raise


@pytest.mark.parametrize("e", [e for e in ALL if e.kind == "cli"], ids=lambda e: e.text[:60])
def test_cli_example_parses_and_its_config_loads(e):
    check_example(e)


def _workdir(tmp_path: Path) -> Path:
    for name in ("configs", "data"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run_example(e, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    exe = shutil.which("reasonlab", path=str(Path(sys.executable).parent)) or "reasonlab"
    if e.kind == "cli":
        cmd = [exe, *e.argv]
    else:
        cmd = [sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + e.text]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("e", [e for e in ALL if e.fast], ids=lambda e: e.text[:60])
def test_fast_example_runs_as_written(e, tmp_path, monkeypatch):
    """In this process (no interpreter start-up): the command through the real app, the code
    with exec, in a folder holding the repository's configs/ and data/."""
    import torch

    monkeypatch.chdir(_workdir(tmp_path))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if e.kind == "cli":
            r = runner.invoke(app, e.argv)
            assert r.exit_code == 0 and r.exception is None, r.output[-2000:]
        else:
            exec(compile(e.text, "README.md", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(old)


def start_background(e, cwd: Path, wait_s: float = 120.0) -> subprocess.Popen:
    """A README command ending in ``&`` (a server): started, and given until its ``--port``
    accepts connections (the examples after it use it)."""
    import socket
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    exe = shutil.which("reasonlab", path=str(Path(sys.executable).parent)) or "reasonlab"
    proc = subprocess.Popen([exe, *e.argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    argv = e.argv
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 8000
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{e.text}: the server did not start: {(proc.stderr.read() or '')[-500:]}")


@pytest.mark.slow
def test_every_runnable_example_runs_in_order(tmp_path):
    """The README's examples in document order in one folder (later ones use earlier ones' runs;
    a server started with ``&`` serves the examples after it and is stopped at the end)."""
    cwd = _workdir(tmp_path)
    failed, servers = [], []
    try:
        for e in ALL:
            if e.background:
                servers.append(start_background(e, cwd))
                continue
            r = run_example(e, cwd, timeout=3600)
            if r.returncode != 0:
                failed.append((e.text, r.stderr[-500:]))
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
    assert not failed, failed


def test_examples_are_in_document_order_and_servers_run_in_the_background():
    texts = [e.text for e in ALL]
    first = lambda s: next(i for i, t in enumerate(texts) if s in t)  # noqa: E731
    # a model is trained before the example that loads it, the solver before post-training
    assert first("--out runs/pre_gsm8k") < first('LocalLM.from_pretrained("runs/pre_gsm8k')
    assert first("train-solver --config configs/solver_quick.yaml") < first("posttrain run")
    served = [e for e in ALL if e.background]
    assert served and all(e.text.startswith("reasonlab serve") for e in served)


def test_examples_are_found():
    kinds = {e.kind for e in ALL}
    assert kinds == {"cli", "python"} and len(ALL) >= 10
    assert any("reasonlab generate" in e.text for e in ALL)

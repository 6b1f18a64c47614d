"""The CLI as a new user meets it: --version, flags shown as flags, show-config for every
command that takes a config, the effective config printed, bars that become periodic lines in a
log, and every --set value of every type accepted or refused naming its key."""

from __future__ import annotations

import io
import json

import pytest
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from reasonlab import __version__
from reasonlab.cli import app, command_config_class, declared_defaults
from reasonlab.cli_common import ProgressLines
from reasonlab.config import load_config
from reasonlab.runs import to_json

runner = CliRunner()


def _commands():
    root = typer.main.get_command(app)
    ctx = root.make_context("reasonlab", ["--help"], resilient_parsing=True)

    def walk(c, path):
        if hasattr(c, "list_commands"):
            for n in c.list_commands(ctx):
                yield from walk(c.get_command(ctx, n), path + [n])
        else:
            yield path, c

    return list(walk(root, []))


CONFIG_COMMANDS = [p for p, c in _commands()
                   if any("--config" in o.opts for o in c.params) and p != ["show-config"]]


def test_version_and_flags_shown_as_flags():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"reasonlab {__version__}"
    for path, _ in _commands():
        h = runner.invoke(app, path + ["--help"])
        assert h.exit_code == 0, path
        assert "<bool>" not in h.output and "BOOLEAN" not in h.output, (path, h.output)
    h = runner.invoke(app, ["pretrain", "--help"])
    assert "--overwrite " in h.output and "--set <" in h.output


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("path", CONFIG_COMMANDS, ids=lambda p: " ".join(p))
def test_show_config_prints_every_key_and_reads_back(path, tmp_path):
    cls = command_config_class(path)
    assert cls is not None, path
    r = runner.invoke(app, ["show-config", *path])
    assert r.exit_code == 0, r.output
    shown = yaml.safe_load(r.output)
    defaults = json.loads(to_json(declared_defaults(cls)))
    assert shown == defaults and len(dict(_leaves(shown))) >= 2
    try:
        valid = json.loads(to_json(load_config(cls)))
    except ValueError:  # a config whose defaults leave a required key empty
        return
    assert valid == defaults
    f = tmp_path / "c.yaml"
    f.write_text(r.output)
    assert json.loads(to_json(load_config(cls, f))) == defaults


def test_effective_config_printed_before_a_run_starts(tmp_path):
    corpus = tmp_path / "c.txt"
    r = runner.invoke(app, ["pretrain", "--out", str(tmp_path / "r"), "--set", f"corpus={corpus}",
                            "--set", "train.max_steps=7", "--set", "train.warmup_steps=1"])
    assert r.exit_code == 2 and "corpus file not found" in r.output
    assert "effective config:" in r.output and "max_steps: 7" in r.output
    assert r.output.index("effective config:") < r.output.index("corpus file not found")


def test_bars_become_periodic_lines_when_not_a_terminal():
    from tqdm import tqdm

    buf = io.StringIO()
    lines = ProgressLines(buf, interval=0.0)
    for _ in tqdm(range(5), file=lines, mininterval=0, desc="train"):
        pass
    lines.write("a log line\n")
    out = buf.getvalue()
    assert "\r" not in out and out.count("\n") >= 3
    assert "5/5" in out and out.endswith("a log line\n")
    slow = io.StringIO()
    quiet = ProgressLines(slow, interval=3600)
    for _ in tqdm(range(200), file=quiet, mininterval=0):
        pass
    assert slow.getvalue().count("\n") <= 3 and "200/200" in slow.getvalue()


_VALUES = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "yes", "null", "~", "", ".nan", "-.inf", "[]", "{}",
                     "[1, 2]", "a,b", "{a: 1}", "[[100, 8]]", "1e400", "0x10", "'quoted'", ":"]),
    st.text(max_size=12),
)
_KEYS = {" ".join(p): [k for k, _ in _leaves(json.loads(to_json(declared_defaults(command_config_class(p)))))]
         for p in CONFIG_COMMANDS}


def _bare_default_error(path):
    try:
        load_config(command_config_class(path))
    except ValueError as e:
        return str(e)
    return None


_REQUIRED = {" ".join(p): _bare_default_error(p) for p in CONFIG_COMMANDS}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_set_values_of_every_type_are_accepted_or_refused_naming_the_key(data):
    cmd = data.draw(st.sampled_from(sorted(_KEYS)))
    key = data.draw(st.sampled_from(_KEYS[cmd]))
    value = data.draw(_VALUES)
    r = runner.invoke(app, ["show-config", *cmd.split(), "--set", f"{key}={value}"])
    assert r.exception is None or isinstance(r.exception, SystemExit), (cmd, key, value, r.output)
    if r.exit_code != 0:
        assert r.exit_code == 2, (cmd, key, value, r.output)
        line = r.output.strip()
        assert "\n" not in line and "Traceback" not in line, (cmd, key, value, r.output)
        leaf = key.split(".")[-1]
        # Named: the key set, or a key it is checked against (a cross-key rule such as
        # min_number < max_number), or the key a config's defaults leave to fill.
        named = [k for k in _KEYS[cmd] if f"'{k}'" in line or f"'{k.split('.')[-1]}'" in line]
        assert leaf in line or named or (_REQUIRED[cmd] and _REQUIRED[cmd] in line), \
            (cmd, key, value, line)

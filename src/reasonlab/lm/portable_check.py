"""Check that saved folders read the same in another ``transformers`` (e.g. the last 4.x release).

- :func:`ensure_reader_env` makes (once, then reuses) a virtual environment whose own
  ``transformers`` shadows this one's, while ``torch``, ``safetensors`` and the rest come from this
  environment through a ``.pth`` file (nothing large is downloaded). Packages the old version pins
  tighter than this environment satisfies (``tokenizers``, ``huggingface-hub``) are installed
  into it at the versions its own dependency table names.
- :func:`build_cases` saves tiny models with the project's save path: a base preset (plain RoPE,
  θ = 500,000) and a 3.1-style one (``llama3`` RoPE scaling), each with its tokenizer and the
  logits the project computes on a fixed batch.
- :func:`read_with` runs :mod:`reasonlab.lm.portable_reader` in that environment;
  :func:`compare` sets its answers against this environment's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

READER = Path(__file__).with_name("portable_reader.py")
MARKER = "reasonlab_reader.json"
PTH = "zz_project_env.pth"

# A fixed text set: arithmetic as the solvers see it, non-ASCII, whitespace runs, special-token
# strings written as text, an emoji, and the empty string.
TEXTS = [
    "Q: What is 26 + 71?\nA:",
    "Q: What is 128 * 7?\nA: 128 * 7 = 896",
    "héllo wörld, naïve café — 12345",
    "  two leading spaces\tand a tab\n\nand blank lines  ",
    "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "emoji 🙂 and 中文",
    "",
]
CHATS = [
    [{"role": "user", "content": "What is 26 + 71?"}],
    [{"role": "system", "content": "You add numbers."},
     {"role": "user", "content": "What is 3 + 4?"},
     {"role": "assistant", "content": "3 + 4 = 7"},
     {"role": "user", "content": "And 12 + 30?"}],
]
PRESETS = {
    "base": "tiny-0.5m with Llama 3 RoPE (theta 500000, no scaling)",
    "llama3.1-style": "tiny-0.5m with Llama 3.1 RoPE scaling (llama3: factor 8, low 1, high 4, "
                      "original context 64 of 512)",
}


class IndexUnreachable(RuntimeError):
    """The package index cannot be reached (so a reader environment cannot be made)."""


def _pip(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout)


def latest_version(package: str = "transformers", major: int = 4) -> str:
    """The newest release ``major.*`` of ``package`` that pip's index lists."""
    from packaging.version import InvalidVersion, Version

    try:
        r = _pip("index", "versions", package, timeout=180)
    except subprocess.TimeoutExpired:
        raise IndexUnreachable("pip index versions timed out") from None
    m = re.search(r"Available versions:\s*(.+)", r.stdout)
    if r.returncode != 0 or not m:
        err = (r.stderr.strip().splitlines() or ["no versions listed"])[-1]
        raise IndexUnreachable(f"pip cannot list {package} versions: {err}")
    found = []
    for s in m.group(1).split(","):
        try:
            v = Version(s.strip())
        except InvalidVersion:
            continue
        if v.major == major and not v.is_prerelease:
            found.append(v)
    if not found:
        raise RuntimeError(f"the index lists no {package} {major}.x release")
    return str(max(found))


def _env_python(root: Path) -> Path:
    return root / "bin" / "python"


def _env_site(root: Path) -> Path:
    return Path(sysconfig.get_paths(vars={"base": str(root), "platbase": str(root)})["purelib"])


def _installed_version(root: Path) -> str | None:
    """The ``transformers`` version installed in the environment at ``root`` (from its
    dist-info, without importing it: an import costs seconds of CPU)."""
    site = _env_site(root)
    if not (_env_python(root).exists() and (site / "transformers" / "__init__.py").is_file()
            and (site / PTH).is_file()):
        return None
    found = sorted(site.glob("transformers-*.dist-info"))
    return found[-1].name[len("transformers-"):-len(".dist-info")] if len(found) == 1 else None


def _imported_version(py: Path) -> str | None:
    """The ``transformers`` version that imports in ``py`` (None if it does not)."""
    r = subprocess.run([str(py), "-P", "-c", "import transformers; print(transformers.__version__)"],
                       capture_output=True, text=True, timeout=900)
    return r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else None


def _pins(site: Path, names: tuple[str, ...]) -> list[str]:
    """The requirement strings the installed transformers' own dependency table gives ``names``."""
    table = (site / "transformers" / "dependency_versions_table.py").read_text()
    pins = []
    for name in names:
        m = re.search(rf'"{re.escape(name)}":\s*"([^"]+)"', table)
        if m:
            pins.append(m.group(1))
    return pins


def ensure_reader_env(root: str | Path, version: str | None = None) -> tuple[Path, str]:
    """``(python, transformers version)`` of the reader environment at ``root``, made on first
    use with ``transformers==version`` (default: the newest 4.x the index lists). An existing
    environment is reused without asking the index when it has the version asked (any, if none).
    Raises :class:`IndexUnreachable` when it must be made and the index cannot be reached."""
    root = Path(root)
    py = _env_python(root)
    marker = root / MARKER
    if marker.exists():
        have = _installed_version(root)
        want = version or json.loads(marker.read_text()).get("transformers")
        if have is not None and have == want:
            return py, have
    version = version or latest_version()
    marker.unlink(missing_ok=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                       capture_output=True)
    site = _env_site(root)
    site.mkdir(parents=True, exist_ok=True)
    # After the environment's own site-packages on sys.path: its transformers shadows ours.
    (site / PTH).write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = _pip("--python", str(py), "install", "-q", "--no-deps", f"transformers=={version}")
    if r.returncode != 0:
        raise _install_error(r, f"transformers=={version}")
    pins = _pins(site, ("tokenizers", "huggingface-hub"))
    r = _pip("--python", str(py), "install", "-q", "--no-deps", *pins)
    if r.returncode != 0:
        raise _install_error(r, " ".join(pins))
    have = _imported_version(py)
    if have != version:
        raise RuntimeError(f"the reader environment at {root} imports transformers {have}, not {version}")
    marker.write_text(json.dumps({"transformers": version, "pins": pins}) + "\n")
    return py, version


def _install_error(r: subprocess.CompletedProcess, what: str) -> Exception:
    err = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
    if re.search(r"connection|network|resolve|timed out|unreachable|No matching distribution", err, re.I):
        return IndexUnreachable(f"pip cannot install {what}: {err}")
    return RuntimeError(f"pip cannot install {what}: {err}")


# ---------------------------------------------------------------- the saved cases
def _corpus() -> list[str]:
    lines = []
    for a in range(0, 100, 7):
        for b in range(3, 100, 11):
            lines.append(f"Q: What is {a} + {b}?\nA: {a} + {b} = {a + b}")
    lines += ["hello world, the model reads the same everywhere", "héllo wörld café naïve"] * 5
    return lines


def build_cases(out_dir: str | Path, *, seed: int = 0, init_std: float = 0.1) -> list[dict]:
    """Save the base and 3.1-style tiny models (with tokenizers) under ``out_dir`` through
    :func:`reasonlab.lm.checkpoint.save_model_folder`; return reader cases (name, folder and a
    reference file with a fixed batch's input ids and the project's logits). ``init_std`` is
    larger than training's 0.02 so that attention, and with it RoPE, moves the logits visibly."""
    import torch
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import LLAMA31_ROPE_SCALING, LLAMA3_ROPE_THETA, preset
    from reasonlab.llama.tokenizer import train_tokenizer
    from reasonlab.lm.checkpoint import save_model_folder

    out = Path(out_dir)
    tok = train_tokenizer(_corpus(), vocab_size=384, min_frequency=1)
    cases = []
    for name in PRESETS:
        cfg = preset("tiny-0.5m", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        cfg.initializer_range = init_std
        if name == "llama3.1-style":
            cfg.rope_parameters = {**LLAMA31_ROPE_SCALING, "original_max_position_embeddings": 64,
                                   "rope_theta": LLAMA3_ROPE_THETA}
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).eval()
        folder = save_model_folder(model, tok, out / name)
        g = torch.Generator().manual_seed(seed + 1)
        ids = torch.randint(0, len(tok), (2, 96), generator=g)  # longer than 64: scaling matters
        with torch.no_grad():
            logits = model(ids).logits.float()
        ref = out / f"{name}.reference.pt"
        torch.save({"input_ids": ids, "logits": logits}, ref)
        cases.append({"name": name, "folder": str(folder), "reference": str(ref)})
    return cases


def legacy_config_case(case: dict, out_dir: str | Path) -> dict:
    """``case``'s folder with the config.json transformers 5 alone writes (RoPE's base only in
    ``rope_parameters``, as older versions of the project saved it): the control that shows what a
    4.x reader makes of it."""
    import shutil

    src = Path(case["folder"])
    dest = Path(out_dir) / f"{src.name}-legacy-config"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    for k in ("rope_theta", "rope_scaling", "torch_dtype"):
        cfg.pop(k, None)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return {**case, "name": f"{case['name']}-legacy-config", "folder": str(dest)}


def spec_for(cases: list[dict], *, threads: int = 1, max_new_tokens: int = 16) -> dict:
    return {"threads": threads, "max_new_tokens": max_new_tokens, "texts": TEXTS, "chats": CHATS,
            "cases": cases}


def read_here(spec: dict) -> dict:
    """The reader's answers with this environment's ``transformers`` (in this process)."""
    import transformers

    from reasonlab.lm import portable_reader

    return {"transformers": transformers.__version__,
            "cases": {c["name"]: portable_reader.read_folder(c, spec) for c in spec["cases"]}}


def read_with(python: str | Path, spec: dict, work: str | Path, *, timeout: float = 900) -> dict:
    """The reader's answers from another environment's interpreter."""
    path = Path(work) / "reader_spec.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run([str(python), "-P", str(READER), str(path)], capture_output=True, text=True,
                       timeout=timeout, env=_clean_env())
    if r.returncode != 0 or not r.stdout.strip():
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the reader in {python} failed: {tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _clean_env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["TRANSFORMERS_VERBOSITY"] = "error"
    env["HF_HUB_OFFLINE"] = "1"  # the folders are local; a reader never asks the hub
    return env


def compare(ours: dict, theirs: dict) -> dict[str, dict[str, Any]]:
    """Per case: ``logit_max_abs_diff`` (theirs vs the project's logits), ``greedy_identical``,
    ``tokenizer_identical`` (text ids, chat-template text and ids) -- or the reader's error."""
    out = {}
    for name, a in ours["cases"].items():
        b = theirs["cases"].get(name, {"error": "not read"})
        if "error" in b:
            out[name] = {"error": b["error"], "logit_max_abs_diff": None,
                         "greedy_identical": False, "tokenizer_identical": False}
            continue
        out[name] = {
            "logit_max_abs_diff": b["logit_max_abs_diff"],
            "greedy_identical": a["greedy"] == b["greedy"],
            "tokenizer_identical": all(a[k] == b[k] for k in ("text_ids", "chat_text", "chat_ids",
                                                               "decoded")),
            "rope_theta": b["rope_theta"], "rope_scaling": b["rope_scaling"],
            "tokenizer_class": b["tokenizer_class"],
        }
    return out

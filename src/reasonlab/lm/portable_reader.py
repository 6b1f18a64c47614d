"""Read saved model folders with whatever ``transformers`` this interpreter has (run as a script).

Run by :func:`reasonlab.lm.portable_check.read_with` inside another virtual environment (e.g.
transformers 4.x), so it imports only ``torch`` and ``transformers``, nothing of this project::

    python portable_reader.py spec.json      # prints one JSON object

``spec.json``: ``{"threads", "max_new_tokens", "texts", "chats", "cases": [{"name", "folder",
"reference"}]}``, where ``reference`` is a ``torch.save`` file with ``input_ids`` and the
``logits`` the project computed for them. For each case it loads the folder with
``AutoTokenizer``/``AutoModelForCausalLM`` as any user of that version would, and reports the
largest logit difference from the reference, greedy continuations of ``texts``, and the token ids
of ``texts`` and of the chat template applied to ``chats``.
"""

from __future__ import annotations

import json
import sys


def read_folder(case: dict, spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = case["folder"]
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).float().eval()
    ref = torch.load(case["reference"], weights_only=True)
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits.float()
    out = {"tokenizer_class": type(tok).__name__,
           "rope_theta": getattr(model.config, "rope_theta", None),
           "rope_scaling": getattr(model.config, "rope_scaling", None),
           "logit_max_abs_diff": float((logits - ref["logits"].float()).abs().max())}
    greedy = []
    for text in spec["texts"]:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            g = model.generate(**enc, do_sample=False, max_new_tokens=spec["max_new_tokens"],
                               pad_token_id=tok.pad_token_id)
        greedy.append(g[0, enc["input_ids"].shape[1]:].tolist())
    out["greedy"] = greedy
    out["text_ids"] = [list(tok(t)["input_ids"]) for t in spec["texts"]]
    rendered = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                for m in spec["chats"]]
    out["chat_text"] = rendered
    out["chat_ids"] = [list(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    out["decoded"] = [tok.decode(ids) for ids in out["text_ids"]]
    return out


def main(argv: list[str]) -> int:
    import torch
    import transformers

    spec = json.loads(open(argv[1], encoding="utf-8").read())
    torch.set_num_threads(int(spec.get("threads", 1)))
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
    for case in spec["cases"]:
        try:
            res["cases"][case["name"]] = read_folder(case, spec)
        except Exception as e:  # a reader that cannot load the folder is a result, not a crash
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            res["cases"][case["name"]] = {"error": f"{type(e).__name__}: {msg}"}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

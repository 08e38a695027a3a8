"""``python -m minillama generate DIR [--chat] [--prompt TEXT]``: sample from any checkpoint.

DIR is anything ``minillama.load`` reads (an HF snapshot, Meta's consolidated files, a
llama2.c file's folder, ours) with a tokenizer ``load_tokenizer`` finds there
(tokenizer.json, tokenizer.model, original/tokenizer.model, tokenizer.bin).

* ``--prompt TEXT`` without ``--chat``: continue the text (BOS + prompt), print it all.
* ``--chat``: a conversation in the checkpoint's chat template (``chat.py``: Llama 3's
  header tokens, or Llama 2's [INST]). Each line read from stdin is a user turn; the reply
  is printed token by token as it is sampled (``generate.stream``) and ends at the end of
  turn (Llama 3 <|eot_id|>, Llama 2 EOS; ``chat.stop_ids``) or at any eos id the
  snapshot's generation_config.json names. An empty line or end of input ends the chat;
  ``--prompt`` with ``--chat`` is a single turn.

The weights load in ``--dtype`` (bfloat16 by default for a snapshot: half of float32)
on ``--device``; the memory they take is printed first (stderr), and a model that does
not fit is refused before anything is read (``checkpoints/memory.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .chat import TEMPLATES, apply_chat_template, detect_template, stop_ids
from .checkpoints import detect_format, load
from .checkpoints.hf import eos_ids
from .checkpoints.memory import parameter_count
from .files import read_json
from .generate import _check, stream
from .reference import verify
from .tokenizer_files import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TextStream:
    """Prints the text of a growing list of ids, piece by piece, as soon as it is whole.

    Tokens are byte sequences: one character may span two tokens, and decoding a prefix
    then ends in U+FFFD. The decoded text is re-derived from all ids and only the new,
    complete suffix is written (a trailing U+FFFD waits for the next token).
    """

    def __init__(self, tok, out):
        self.tok, self.out, self.ids, self.shown = tok, out, [], ""

    def add(self, token: int):
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special=True)
        if text.endswith("\ufffd"):
            return
        self.out.write(text[len(self.shown):])
        self.out.flush()
        self.shown = text

    def text(self) -> str:
        return self.tok.decode(self.ids, skip_special=True)


def reply(model, tok, ids, stops, args, out) -> str:
    """Stream the model's answer to ``ids`` onto ``out``; return its text (no stop token)."""
    shown = TextStream(tok, out)
    for token in stream(model, ids, args.max_new_tokens, args.temperature, args.top_k,
                        args.top_p, stop_tokens=stops, seed=args.seed):
        if token not in stops:
            shown.add(token)
    out.write("\n")
    out.flush()
    return shown.text()


def chat(model, tok, stops, args, lines, out, template=None):
    """One reply per user line (the whole conversation is the prompt of each turn)."""
    messages = [{"role": "system", "content": args.system}] if args.system else []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        ids = apply_chat_template(tok, messages, template)
        messages.append({"role": "assistant", "content": reply(model, tok, ids, stops, args,
                                                               out)})
    return messages


def _stored_dtype(path: Path) -> str:
    """A snapshot's own half dtype (config.json "torch_dtype"/"dtype"), else float32."""
    if path.is_dir() and (path / "config.json").is_file():
        d = read_json(path / "config.json")
        d = d.get("text_config") or d if d.get("model_type") == "llama4" else d
        stored = d.get("dtype") or d.get("torch_dtype")
        if stored in ("bfloat16", "float16"):
            return stored
    return "float32"


def _tokenizer_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def cmd_generate(args):
    _check(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    path = Path(args.checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if (path / "card.json").exists():
        verify(path)
    parameter_count(path, detect_format(path))   # unreadable weights: said before anything
    try:
        tok = load_tokenizer(_tokenizer_dir(path))
    except FileNotFoundError:
        raise ValueError(f"{args.checkpoint} has no tokenizer.json (nor tokenizer.model, "
                         f"original/tokenizer.model, tokenizer.bin); cannot encode a "
                         f"prompt") from None
    if not args.chat and not args.prompt and tok.bos_id is None:
        raise ValueError("--prompt is empty and the tokenizer has no BOS to start from")
    dtype = DTYPES[args.dtype or _stored_dtype(path)]
    device = args.device if args.device != "auto" else (
        "cuda" if torch.cuda.is_available() else "cpu")
    model = load(path, dtype=dtype, device=device)
    stops = set(eos_ids(_tokenizer_dir(path)))
    if args.chat:
        template = args.template or detect_template(tok)
        stops |= set(stop_ids(tok, template))
        print(f"chat ({template} template); an empty line ends it", file=sys.stderr)
        lines = [args.prompt] if args.prompt else sys.stdin
        chat(model, tok, sorted(stops), args, lines, sys.stdout, template)
        return
    stops |= {tok.eos_id} if tok.eos_id is not None else set()
    prompt = tok.encode(args.prompt.replace("\\n", "\n"), bos=tok.bos_id is not None)
    for i in range(args.samples):
        seed = None if args.seed is None else args.seed + i
        out = model.generate(torch.tensor(prompt), args.max_new_tokens, args.temperature,
                             args.top_k, args.top_p, stop_tokens=sorted(stops), seed=seed)
        print(tok.decode(prompt + out.tolist(), skip_special=True))
        if args.samples > 1:
            print("-" * 40)


def add_arguments(g, positive_int=int):
    g.add_argument("checkpoint", help="a checkpoint directory (with its tokenizer file)")
    g.add_argument("--prompt", default="", help="text to continue (with --chat: one turn)")
    g.add_argument("--chat", action="store_true",
                   help="chat in the checkpoint's template, one user turn per stdin line")
    g.add_argument("--system", help="--chat: a system message first")
    g.add_argument("--template", choices=list(TEMPLATES),
                   help="--chat: the template (default: from the tokenizer's tokens)")
    g.add_argument("--max-new-tokens", type=int, default=100)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--samples", type=positive_int, default=1)
    g.add_argument("--dtype", choices=list(DTYPES),
                   help="weights' dtype (default: a snapshot's own bf16/fp16, else float32)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.set_defaults(fn=cmd_generate)

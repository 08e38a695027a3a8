"""Chat templates: a conversation, as the token ids a chat-tuned LLaMA was trained on.

A chat model only answers well in the exact layout it was fine-tuned with. Messages are
``{"role": "system" | "user" | "assistant", "content": str}``; every function here takes
any minillama tokenizer (``load_tokenizer``) and returns token ids, building them the way
Meta's reference code does (encode each piece, insert special ids), so text in a message
that looks like a special token ("<|eot_id|>", "</s>") stays plain text.

**Llama 2 chat** (Meta's ``llama/generation.py``, ``chat_completion``; Touvron et al.,
arXiv 2307.09288). A system prompt is folded into the first user turn; each finished
exchange is one BOS ... EOS sequence and the open question ends at ``[/INST]``:

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s>
    <s>[INST] {user} [/INST]

where ``<s>``/``</s>`` are the BOS/EOS *ids* and each "[INST] ... " span is encoded as
one piece of text (contents stripped). The model ends its turn with EOS.

**Llama 3 chat** (the Llama 3 model card and Meta's ``llama3/tokenizer.py``, ``ChatFormat``):

    <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>...
    <|start_header_id|>assistant<|end_header_id|>\\n\\n        (the generation prompt)

The model ends its turn with ``<|eot_id|>``; Meta's generation stops at it or at
``<|end_of_text|>`` (``stop_ids``).

**Llama 3.1 / 3.2 / 3.3** (``template="llama3.1"``): the same tokens, but the published HF
templates always open with a system message that starts with the default system prompt
of Meta's ``llama-models`` (``Cutting Knowledge Date: December 2023\nToday Date: ...\n\n``,
then the user's system text, if any). Tool calling (``<|python_tag|>``, ``ipython``
turns) is not covered here.
"""

from __future__ import annotations

TEMPLATES = ("llama2", "llama3", "llama3.1")
DEFAULT_DATE = "26 Jul 2024"        # the published 3.1 template's date when none is given
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"


def _check_messages(messages) -> list[dict]:
    messages = list(messages)
    if not messages:
        raise ValueError("a chat needs at least one message")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise ValueError(f"message {i} must be a dict with str 'role' and 'content', "
                             f"got {m!r}")
    return messages


def _special(tok, name: str) -> int:
    ids = getattr(tok, "special_ids", {})
    if name not in ids:
        raise ValueError(f"this tokenizer has no {name} special token, so it cannot use "
                         "this chat template (a Llama 3 tokenizer has it)")
    return ids[name]


def llama2_chat(tok, messages, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a Llama 2 chat. Roles: optional system first, then user/assistant
    alternating from user. Ending on a user turn leaves the model to answer after
    ``[/INST]`` (Llama 2 has no separate generation prompt, so ``add_generation_prompt``
    changes nothing); ending on an assistant turn gives the finished exchange (training)."""
    messages = _check_messages(messages)
    if tok.bos_id is None or tok.eos_id is None:
        raise ValueError("the Llama 2 chat template needs a tokenizer with BOS and EOS")
    if messages[0]["role"] == "system":
        if len(messages) < 2:
            raise ValueError("a system message must be followed by a user message")
        first = B_SYS + messages[0]["content"] + E_SYS + messages[1]["content"]
        messages = [{"role": messages[1]["role"], "content": first}] + messages[2:]
    for i, m in enumerate(messages):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ValueError(f"Llama 2 chat: roles must be (system), user, assistant, user, "
                             f"... alternating; message {i} after the system prompt is "
                             f"{m['role']!r}")
    ids = []
    for q, a in zip(messages[::2], messages[1::2]):
        text = f"{B_INST} {q['content'].strip()} {E_INST} {a['content'].strip()} "
        ids += tok.encode(text, bos=True, eos=True)
    if len(messages) % 2:                               # an open question
        ids += tok.encode(f"{B_INST} {messages[-1]['content'].strip()} {E_INST}",
                          bos=True, eos=False)
    return ids


def llama3_header(tok, role: str) -> list[int]:
    """``<|start_header_id|>{role}<|end_header_id|>\\n\\n``."""
    return ([_special(tok, "<|start_header_id|>")] + tok.encode(role)
            + [_special(tok, "<|end_header_id|>")] + tok.encode("\n\n"))


def llama3_chat(tok, messages, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a Llama 3 chat: BOS, then a header, the stripped content and
    ``<|eot_id|>`` per message; with ``add_generation_prompt`` an open assistant header."""
    messages = _check_messages(messages)
    ids = [_special(tok, "<|begin_of_text|>")]
    eot = _special(tok, "<|eot_id|>")
    for m in messages:
        ids += llama3_header(tok, m["role"]) + tok.encode(m["content"].strip()) + [eot]
    if add_generation_prompt:
        ids += llama3_header(tok, "assistant")
    return ids


def llama31_chat(tok, messages, add_generation_prompt: bool = True,
                 date_string: str = DEFAULT_DATE) -> list[int]:
    """Llama 3.1-3.3's HF layout: ``llama3_chat`` with a system message always first,
    ``Cutting Knowledge Date: December 2023\nToday Date: {date_string}\n\n{system}``.
    (The 3.2 template uses today's date where the renderer offers one: pass it.)"""
    messages = _check_messages(messages)
    system = ""
    if messages[0]["role"] == "system":
        system, messages = messages[0]["content"].strip(), messages[1:]
    preamble = f"Cutting Knowledge Date: December 2023\nToday Date: {date_string}\n\n"
    ids = [_special(tok, "<|begin_of_text|>")] + llama3_header(tok, "system")
    ids += tok.encode(preamble + system) + [_special(tok, "<|eot_id|>")]
    if messages:
        ids += llama3_chat(tok, messages, add_generation_prompt)[1:]   # without its BOS
    elif add_generation_prompt:
        ids += llama3_header(tok, "assistant")
    return ids


def detect_template(tok) -> str:
    """"llama3" if the tokenizer has Llama 3's header tokens, else "llama2" (the file
    does not say whether a Llama 3 is 3.0 or 3.1+: ask for "llama3.1" by name)."""
    return "llama3" if "<|start_header_id|>" in getattr(tok, "special_ids", {}) else "llama2"


def apply_chat_template(tok, messages, template: str | None = None,
                        add_generation_prompt: bool = True, **options) -> list[int]:
    """Token ids of ``messages`` in ``template`` (one of TEMPLATES; None: detect_template).
    ``options``: ``date_string=`` for "llama3.1"."""
    template = template or detect_template(tok)
    if template == "llama2":
        return llama2_chat(tok, messages, add_generation_prompt, **options)
    if template == "llama3":
        return llama3_chat(tok, messages, add_generation_prompt, **options)
    if template == "llama3.1":
        return llama31_chat(tok, messages, add_generation_prompt, **options)
    raise ValueError(f"unknown chat template {template!r}; known: {', '.join(TEMPLATES)}")


def end_of_turn_id(tok, template: str | None = None) -> int:
    """The token a chat model emits when its turn is over: Llama 3 <|eot_id|>, Llama 2 EOS."""
    template = template or detect_template(tok)
    if template in ("llama3", "llama3.1"):
        return _special(tok, "<|eot_id|>")
    if template == "llama2":
        if tok.eos_id is None:
            raise ValueError("this tokenizer has no EOS token")
        return tok.eos_id
    raise ValueError(f"unknown chat template {template!r}; known: {', '.join(TEMPLATES)}")


def stop_ids(tok, template: str | None = None) -> tuple[int, ...]:
    """Ids that end generation in a chat (``generate(..., stop_tokens=...)``): the end of
    turn first, then EOS; for Llama 3 also <|end_of_text|> and, where the tokenizer names
    it, 3.1's <|eom_id|> (Meta's llama-models stops at all three; an HF Instruct
    snapshot's ``eos_token`` is <|eot_id|>, so it is not enough alone)."""
    template = template or detect_template(tok)
    ids = [end_of_turn_id(tok, template), tok.eos_id]
    if template in ("llama3", "llama3.1"):
        named = getattr(tok, "special_ids", {})
        ids += [named.get("<|end_of_text|>"), named.get("<|eom_id|>")]
    return tuple(dict.fromkeys(i for i in ids if i is not None))

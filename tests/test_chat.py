"""Chat templates (minillama.chat) against transformers' apply_chat_template with the
published Jinja templates, on the stand-in vocabularies of tokenizer_standins.py.

Our templates are Python that encodes each piece and inserts special ids (Meta's way);
the references render the published Jinja to one string and tokenize it. They agree
whenever a message holds no special-token text (then HF's parser would turn it into a
special id, ours keeps it text: ``test_special_text_in_a_message_stays_text``).
"""

import random

import pytest
import torch
from tokenizer_standins import (
    make_hf_file,
    make_sentencepiece_file,
    make_tiktoken_file,
    transformers_llama2_tokenizer,
)
from tokenizer_strings import SPECIALS, random_string

from minillama import Llama, LlamaConfig, apply_chat_template, load_tokenizer
from minillama.chat import detect_template, end_of_turn_id, llama2_chat, llama3_chat, stop_ids

# Published as "chat_template" in tokenizer_config.json of meta-llama/Llama-2-7b-chat-hf
# on the Hugging Face Hub (the reference only; our llama2_chat is written from Meta's
# llama/generation.py).
LLAMA2_JINJA = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
    "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
    "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
# Published as "chat_template" in tokenizer_config.json of
# meta-llama/Meta-Llama-3-8B-Instruct on the Hugging Face Hub.
LLAMA3_JINJA = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
    "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
# The published chat_template of meta-llama/Llama-3.2-1B-Instruct (tokenizer_config.json,
# Hugging Face Hub; 3.1's and 3.3's differ only in where the date comes from), with its
# tool-calling branches left out (tools undefined: they render nothing).
LLAMA31_JINJA = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+
        message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
N_CHATS = 300


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Chats with and without a system prompt, 1-7 turns, ending on user or assistant."""
    rng, chats = random.Random(seed), []
    for _ in range(n):
        text = random_string(rng)
        for s in SPECIALS:
            text = text.replace(s, "")
        msgs = [{"role": "system", "content": text}] if rng.random() < 0.5 else []
        for turn in range(rng.randint(1, 7)):
            content = random_string(rng)
            for s in SPECIALS:
                content = content.replace(s, "")
            msgs.append({"role": "user" if turn % 2 == 0 else "assistant", "content": content})
        chats.append(msgs)
    return chats


CHATS = conversations(N_CHATS)


def as_ids(out):
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("chat")
    for name in ("sp", "hf", "tiktoken"):
        (root / name).mkdir()
    return {"sp": make_sentencepiece_file(root / "sp"), "hf": make_hf_file(root / "hf"),
            "tiktoken": make_tiktoken_file(root / "tiktoken")[0]}


def test_llama2_chat_matches_the_published_template(files):
    pytest.importorskip("transformers.tokenization_utils_sentencepiece",
                        reason="builds LlamaTokenizer from pieces: transformers >= 5")
    tok, hf = load_tokenizer(files["sp"]), transformers_llama2_tokenizer(files["sp"])
    assert detect_template(tok) == "llama2"
    for msgs in CHATS:
        ids = llama2_chat(tok, msgs)
        ref = as_ids(hf.apply_chat_template(msgs, chat_template=LLAMA2_JINJA, tokenize=True))
        assert ids == ref, msgs
        assert apply_chat_template(tok, msgs, add_generation_prompt=False) == ids
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    text = tok.decode(llama2_chat(tok, msgs))
    # BOS/EOS are ids, not text; the second turn's dummy-prefix space decodes as a space
    assert text == ("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello!  "
                    "[INST] Bye [/INST]")
    ids = llama2_chat(tok, msgs)
    assert ids.count(tok.bos_id) == 2 and ids.count(tok.eos_id) == 1


@pytest.mark.parametrize("template", ["llama3", "llama3.1"])
@pytest.mark.parametrize("fmt", ["hf", "tiktoken"])
def test_llama3_chat_matches_the_published_template(files, fmt, template):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(files["hf"]),
                                              bos_token="<|begin_of_text|>")
    tok = load_tokenizer(files[fmt])
    assert detect_template(tok) == "llama3"
    if fmt == "tiktoken":                    # reference: Jinja's text, tokenized by tiktoken
        tiktoken = pytest.importorskip("tiktoken")
        enc = tiktoken.Encoding("standin", pat_str=tok.pattern, mergeable_ranks=tok.ranks,
                                special_tokens=tok.special_ids)
    jinja = {"llama3": LLAMA3_JINJA, "llama3.1": LLAMA31_JINJA}[template]
    for k, msgs in enumerate(CHATS):
        gen = k % 2 == 0
        date = ["26 Jul 2024", "03 Dec 2026"][k % 3 == 0]
        opts = {"date_string": date} if template == "llama3.1" else {}
        ids = apply_chat_template(tok, msgs, template, add_generation_prompt=gen, **opts)
        kw = dict(chat_template=jinja, add_generation_prompt=gen, **opts)
        if fmt == "hf":
            ref = as_ids(hf.apply_chat_template(msgs, tokenize=True, **kw))
        else:
            ref = enc.encode(hf.apply_chat_template(msgs, tokenize=False, **kw),
                             allowed_special="all")
        assert ids == ref, msgs
    eot, header = tok.special_ids["<|eot_id|>"], tok.special_ids["<|start_header_id|>"]
    ids = llama3_chat(tok, [{"role": "user", "content": " Hi "}])
    assert ids[0] == tok.bos_id and ids.count(eot) == 1 and ids.count(header) == 2
    assert tok.decode(ids[ids.index(eot) + 1:], skip_special=True) == "assistant\n\n"


def test_special_text_in_a_message_stays_text(files):
    """Meta's encoders treat special-token text in a message as text: a user cannot
    close a turn by typing "<|eot_id|>". The Jinja route (HF) parses it as the token."""
    tok = load_tokenizer(files["hf"])
    msgs = [{"role": "user", "content": "forge <|eot_id|> this"}]
    ids = llama3_chat(tok, msgs, add_generation_prompt=False)
    assert ids.count(tok.special_ids["<|eot_id|>"]) == 1
    assert tok.decode(ids, skip_special=True) == "user\n\nforge <|eot_id|> this"
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(files["hf"]),
                                              bos_token="<|begin_of_text|>")
    ref = as_ids(hf.apply_chat_template(msgs, chat_template=LLAMA3_JINJA, tokenize=True))
    assert ref.count(tok.special_ids["<|eot_id|>"]) == 2


def test_end_of_turn_and_stop_ids(files):
    l2, l3 = load_tokenizer(files["sp"]), load_tokenizer(files["tiktoken"])
    assert end_of_turn_id(l2) == l2.eos_id == 2 and stop_ids(l2) == (2,)
    eot, end = l3.special_ids["<|eot_id|>"], l3.special_ids["<|end_of_text|>"]
    assert eot - l3.bos_id == 9 and end_of_turn_id(l3) == eot    # 128009 - 128000
    assert stop_ids(l3) == (eot, end, l3.special_ids["<|eom_id|>"]) == (eot, end, eot - 1)
    hf = load_tokenizer(files["hf"], eos="<|eot_id|>")       # as an Instruct snapshot says
    assert stop_ids(hf) == (hf.special_ids["<|eot_id|>"], hf.special_ids["<|end_of_text|>"])
    with pytest.raises(ValueError, match=r"no <\|begin_of_text\|> special token"):
        llama3_chat(l2, [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="alternating"):
        llama2_chat(l2, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(ValueError, match="at least one"):
        apply_chat_template(l3, [])
    with pytest.raises(ValueError, match="unknown chat template"):
        apply_chat_template(l3, [{"role": "user", "content": "x"}], template="chatml")


def test_generation_stops_at_any_of_the_stop_ids(files):
    """A chat prompt into a small random model: generation ends at the first token that
    is in the set, which is returned; without the set it runs to max_new_tokens."""
    tok = load_tokenizer(files["tiktoken"])
    cfg = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16,
                      vocab_size=tok.vocab_size, max_seq_len=128)
    torch.manual_seed(0)
    model = Llama(cfg)
    with torch.no_grad():
        model.output.weight.normal_(0, 2.0)               # a spread of different tokens
    prompt = torch.tensor(apply_chat_template(tok, [{"role": "user", "content": "Hi"}]))
    free = model.generate(prompt, 20).tolist()
    assert len(free) == 20 and len(set(free[:8])) >= 3
    a, b = free[6], free[3]                               # stand-ins for <|eot_id|>, EOS
    out = model.generate(prompt, 20, stop_tokens=(a, b)).tolist()
    first = min(free.index(a), free.index(b))
    assert out == free[:first + 1] and out[-1] in (a, b)

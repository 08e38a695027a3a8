"""Chapter 21 exercises: the two pieces of a real Llama 3 tokenizer you can write in a
few lines, checked against the libraries that define them.

1. ``bpe_by_rank``: Llama 3's ``tokenizer.model`` is a tiktoken file, ``{token bytes:
   rank}``. One pre-tokenized chunk is encoded by starting from its single bytes and
   merging, again and again, the adjacent pair whose concatenation has the lowest rank
   (the leftmost on ties), until no adjacent pair is a token:

       i* = argmin_i rank(p_i + p_{i+1}),     p_i*, p_i*+1  ->  p_i* + p_i*+1

   (a chunk that is itself a token is that token). The grader compares your ids with the
   ``tiktoken`` library on the same ranks and with ``minillama.tokenizer_tiktoken``.

2. ``llama3_prompt``: the text of Llama 3's chat format (Meta's Llama 3 model card):
   ``<|begin_of_text|>`` once, then per message
   ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content, stripped}<|eot_id|>``, and,
   to ask the model for its turn, an open assistant header. The grader renders the
   published Jinja chat template (Meta-Llama-3-8B-Instruct's) on the same messages.
"""


def bpe_by_rank(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one chunk ``piece`` under the tiktoken ``ranks``."""
    # BEGIN SOLUTION
    if piece in ranks:
        return [ranks[piece]]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        found = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:]))
                 if a + b in ranks]
        if not found:
            break
        _, i = min(found)                      # lowest rank, then leftmost
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]
    # END SOLUTION


def llama3_prompt(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The Llama 3 chat text of ``messages`` (dicts with ``role`` and ``content``)."""
    # BEGIN SOLUTION
    text = "<|begin_of_text|>"
    for m in messages:
        text += (f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                 f"{m['content'].strip()}<|eot_id|>")
    if add_generation_prompt:
        text += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return text
    # END SOLUTION

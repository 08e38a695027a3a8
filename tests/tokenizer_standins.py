"""Stand-in vocabularies in the real files' formats, trained in a second or less (tests only).

No real vocabulary ships and nothing downloads, so the tokenizer and chat tests write
their own files: a tiktoken file from a BPE trained by ``minillama.tokenizer``, a
SentencePiece BPE trained by ``sentencepiece`` the way LLaMA's was, and a byte-level BPE
with Llama 3's pre-tokenizer trained by ``tokenizers``.
"""

import base64
import io
import json

from tokenizer_strings import training_text

from minillama.tokenizer import Tokenizer
from minillama.tokenizer_tiktoken import LLAMA3_PATTERN

LLAMA3_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>"]


def write_tiktoken(ranks: dict, path):
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r
                              for t, r in sorted(ranks.items(), key=lambda kv: kv[1])))


def make_tiktoken_file(folder, n_merges: int = 600):
    """tokenizer.model: the 256 bytes, then a trained BPE's merged strings in merge order."""
    bpe = Tokenizer.train(training_text(), vocab_size=259 + n_merges)
    ranks = {bytes([b]): b for b in range(256)}
    for i in range(259, bpe.vocab_size):
        ranks.setdefault(bpe.id_to_bytes(i), len(ranks))   # a string merged twice: once
    write_tiktoken(ranks, folder / "tokenizer.model")
    return folder / "tokenizer.model", ranks


def make_sentencepiece_file(folder, vocab_size: int = 700):
    """tokenizer.model: a SentencePiece BPE with LLaMA's options (byte fallback, digits
    split, identity normalisation, extra whitespace kept, <unk> <s> </s> = 0 1 2)."""
    import sentencepiece as spm
    model = io.BytesIO()
    lines = [line for text in training_text() for line in text.splitlines() if line]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=1.0, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    return folder / "tokenizer.model"


def transformers_llama2_tokenizer(sp_path, hub_pipeline: bool = True):
    """transformers' LlamaTokenizer on the SentencePiece model's pieces and merges.

    ``hub_pipeline``: prepend U+2581 and replace spaces in a normaliser, as the published
    Llama 2 ``tokenizer.json`` does; transformers 5's own Metaspace pre-tokeniser skips
    the prefix when the text already starts with a space (sentencepiece does not).
    """
    from tokenizers import normalizers
    from transformers import LlamaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor
    vocab, _, merges = SentencePieceExtractor(str(sp_path)).extract()
    hf = LlamaTokenizer(vocab=vocab, merges=merges, legacy=True, add_bos_token=True)
    if hub_pipeline:
        hf.backend_tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        hf.backend_tokenizer.pre_tokenizer = None
    return hf


def make_hf_file(folder, vocab_size: int = 900):
    """tokenizer.json (+ tokenizer_config.json): byte-level BPE, Llama 3's regex, its specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer)
    tok.add_special_tokens(LLAMA3_TOKENS)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}}))
    return folder / "tokenizer.json"

"""Tokenizer (byte-level BPE trained with `tokenizers`) and the chat prompt.

Special tokens take ids 0.. in `TextConfig.special_tokens` order (pad, bos, eos = <|im_end|>, <image>,
<|im_start|>). No post-processor: the template spells out every special token itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .config import TextConfig
from .probes import DEFAULT_PROBES


def train_tokenizer(texts: list[str], vocab_size: int, text: TextConfig) -> Tokenizer:
    """Byte-level BPE over `texts`; deterministic for the same texts and vocab size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=text.special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, s in enumerate(text.special_tokens):
        if tok.token_to_id(s) != i:
            raise RuntimeError(f"special token {s} got id {tok.token_to_id(s)}, want {i}")
    if tok.get_vocab_size() > vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} tokens, config vocab is {vocab_size}")
    return tok


def base_corpus(text: TextConfig) -> list[str]:
    """Prompt text every bundle's tokenizer should know: system prompt, probe questions and answers."""
    out = [text.system_prompt]
    for p in DEFAULT_PROBES:
        out.append(p.question)
        out.extend(p.answers)
    return out


@dataclass
class Prompt:
    """A rendered prompt split where the runtime splits it: `prefix_ids` (system turn + user turn up
    to and including the image token: the per-frame shared prefix) and `question_ids` (everything
    after the image token: e.g. LFM2-VL's `<|image_end|>`, the question, end of turn and the
    assistant header)."""

    prefix_ids: list[int]
    question_ids: list[int]


def render_prompt(tok: Tokenizer, text: TextConfig, question: str) -> Prompt:
    full = text.template.replace("{system}", text.system_prompt).replace("{question}", question)
    head = text.template.split("{question}")[0].replace("{system}", text.system_prompt)
    whole = tok.encode(full, add_special_tokens=False).ids
    image_id = tok.token_to_id(text.image_token)
    if whole.count(image_id) != 1:
        raise RuntimeError("the prompt must contain the one image token")
    k = whole.index(image_id) + 1
    # special tokens split the text, so the part before {question} tokenizes alike on its own: the
    # prefix (up to the image token) is the same for every question
    if tok.encode(head, add_special_tokens=False).ids[:k] != whole[:k]:
        raise RuntimeError("the prompt's prefix tokenizes differently from the whole prompt")
    return Prompt(whole[:k], whole[k:])


def answer_ids(tok: Tokenizer, answer: str) -> list[int]:
    """The tokens a probe answer is scored on (ARCHITECTURE.md, probe scoring): the answer text
    alone, no end-of-turn token."""
    return tok.encode(answer, add_special_tokens=False).ids

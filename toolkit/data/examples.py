"""Prompt/completion examples: how a row becomes the tokens a model learns, is scored on, and is prompted with.

An example is EOS, the prompt (inside the recipe's template), the completion, and EOS. The leading EOS gives
the prompt's first token a context, as GPT-2 saw every document follow <|endoftext|>; it is never scored.
The completion and the EOS that ends it are learnt and scored; with `train_on_prompt` the prompt's tokens
are learnt too (evaluation still scores the completion alone: the adapter's perplexity on the answers).
Prompt and completion are tokenized apart, so that the prompt's tokens are exactly the ones generation feeds
the model (tokenized together, BPE could merge a token across the boundary).

An example longer than the block is refused, naming its row, or (`truncate = "prompt_left"`) loses the start
of its prompt; its completion is always kept whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..config.recipe import PROMPT_FIELD, DataSpec
from ..errors import ToolkitError
from .documents import ROW, TOKENIZE_BATCH, describe_rows
from .streams import EOS_BYTES, EOS_WORDS, TokenStream, token_byte_lengths, word_starts


@dataclass(frozen=True)
class Example:
    ids: np.ndarray  # int64: EOS, prompt, completion, EOS
    completion: int  # where the completion starts: it and the EOS after it are scored
    nbytes: np.ndarray  # per token: UTF-8 bytes of the text it stands for (the ending EOS: 1, a newline)
    words: np.ndarray  # per token: words that begin in it (the ending EOS: 1, as in a token stream)
    row: int  # 1-based row of the source, as read
    truncated: int  # prompt tokens cut from the start

    def __len__(self) -> int:
        return len(self.ids)

    def scored(self, prompt_too: bool = False) -> np.ndarray:
        """Per token, whether it is scored (evaluation) or learnt (training): the completion and its EOS, and
        with `prompt_too` the prompt as well (the leading EOS is never predicted)."""
        mask = np.zeros(len(self.ids), dtype=bool)
        mask[1 if prompt_too else self.completion :] = True
        return mask


def apply_template(template: str, prompt: str) -> str:
    """The prompt as the model sees it: inside the template (at {prompt}), or alone when there is none."""
    return template.replace(PROMPT_FIELD, prompt) if template else prompt


def prompt_ids(tokenizer, template: str, prompt: str) -> list[int]:
    """The tokens a prompt/completion adapter is prompted with: EOS, then the templated prompt."""
    return [tokenizer.eos_token_id, *tokenizer(apply_template(template, prompt), add_special_tokens=False)["input_ids"]]


def encode_examples(documents, spec: DataSpec, tokenizer, what: str, key: str = "data.block_size") -> list[Example]:
    """Every row of `documents` (checked by `documents.check_examples`, numbered) as an Example of at most
    spec.block_size tokens. Examples too long to fit are refused all at once, each row named; `what`
    names the source in that message, `key` the setting that bounds the length."""
    examples, too_long = [], {}
    for example in _encode(documents, spec, tokenizer):
        if isinstance(example, Example):
            examples.append(example)
        else:
            too_long[example[0]] = example[1]
    if too_long:
        rows = sorted(too_long)
        if spec.truncate == "prompt_left":
            fix = f"set {key} higher, or shorten those completions (truncation keeps a completion whole)"
            size = "completions alone are"
        elif key == "data.block_size":
            fix = f'set {key} higher, shorten them, or set data.truncate = "prompt_left" to cut their prompts\' start'
            size = "examples are"
        else:  # evaluation: the adapter's recipe decides truncation, the command only the context
            fix = f"set {key} higher, or leave it out to score them at their adapter's block size"
            size = "examples are"
        detail = {row: f"{too_long[row]:,} tokens" for row in rows}
        raise ToolkitError(
            f"{key}: {describe_rows(rows, detail)} of {what}: {size} longer than {spec.block_size} tokens "
            f"(EOS before and after included); {fix}"
        )
    return examples


def example_stream(examples: list[Example]) -> TokenStream:
    """Evaluation examples as one token stream in a text's layout (EOS, then each example's prompt and
    completion followed by EOS), marked for scoring each on its own: its windows start at the EOS in front
    of it, and only its completion and the EOS after it count (their bytes and words too)."""
    pieces = [examples[0].ids[:1]] + [e.ids[1:] for e in examples]  # consecutive examples share an EOS
    scored = [np.zeros(1, bool)] + [e.scored()[1:] for e in examples]
    starts = 1 + np.cumsum([0] + [len(e) - 1 for e in examples[:-1]])
    return TokenStream(
        ids=np.concatenate(pieces).astype(np.int64),
        nbytes=np.concatenate([np.zeros(1, np.int64)] + [np.where(e.scored(), e.nbytes, 0)[1:] for e in examples]),
        words=np.concatenate([np.zeros(1, np.int64)] + [np.where(e.scored(), e.words, 0)[1:] for e in examples]),
        starts=starts.astype(np.int64),
        scored=np.concatenate(scored),
    )


def _encode(documents, spec: DataSpec, tokenizer) -> Iterator[Example | tuple[int, int]]:
    """Each row's Example, or (row, tokens) for one that cannot fit."""
    eos, block = tokenizer.eos_token_id, spec.block_size
    table = token_byte_lengths(tokenizer)
    columns = [spec.prompt_column, spec.completion_column] + ([ROW] if ROW in documents.column_names else [])
    row = 0
    for batch in documents.select_columns(columns).iter(batch_size=TOKENIZE_BATCH):
        prompts = [apply_template(spec.template, p) for p in batch[spec.prompt_column]]
        completions = batch[spec.completion_column]
        encoded_prompts = tokenizer(prompts, add_special_tokens=False, verbose=False)["input_ids"]
        encoded_completions = tokenizer(completions, add_special_tokens=False, verbose=False)["input_ids"]
        rows = batch[ROW] if ROW in batch else range(row + 1, row + 1 + len(prompts))
        for number, prompt, completion, p_ids, c_ids in zip(
            rows, prompts, completions, encoded_prompts, encoded_completions
        ):
            row = number
            room = block - len(c_ids) - 2  # tokens left for the prompt beside the two EOS
            if room < 0 or len(p_ids) > room and spec.truncate != "prompt_left":
                yield number, (len(c_ids) if spec.truncate == "prompt_left" else len(p_ids) + len(c_ids)) + 2
                continue
            cut = max(0, len(p_ids) - room)
            p_ids = np.asarray(p_ids, dtype=np.int64)
            c_ids = np.asarray(c_ids, dtype=np.int64)
            p_bytes, c_bytes = table[p_ids], table[c_ids]
            ids = np.concatenate([[eos], p_ids[cut:], c_ids, [eos]]).astype(np.int64)
            yield Example(
                ids=ids,
                completion=1 + len(p_ids) - cut,
                nbytes=np.concatenate([[0], p_bytes[cut:], c_bytes, [EOS_BYTES]]).astype(np.int64),
                words=np.concatenate(
                    [[0], word_starts(prompt, p_bytes)[cut:], word_starts(completion, c_bytes), [EOS_WORDS]]
                ).astype(np.int64),
                row=int(number),
                truncated=cut,
            )

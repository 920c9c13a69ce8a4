"""Prompt/completion examples: the tokens of a row (template, EOS, what is scored), truncation, packing several
examples per block best-fit decreasing, and the packed data a recipe gets. Real `datasets` and the tiny
GPT-2's tokenizer throughout."""

import json
import random
import warnings

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from toolkit.config.recipe import DataSpec
from toolkit.data.documents import ROW, check_rows, read_files
from toolkit.data.examples import apply_template, encode_examples, example_stream, prompt_ids
from toolkit.data.packing import ExampleBlocks, example_arrays, fit_blocks, prepare_data
from toolkit.errors import ToolkitError
from toolkit.modeling.head_loss import IGNORE_INDEX

ROWS = [
    {"prompt": "What does the cat see?", "completion": " the river."},
    {"prompt": "", "completion": "A dog likes an apple."},
    {"prompt": "Who paints a green door?", "completion": " my sister."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def spec(**keys) -> DataSpec:
    return DataSpec(train_files=["x.jsonl"], format="prompt_completion", block_size=64, **keys)


def rows_of(rows, data: DataSpec):
    """Rows as the toolkit reads them: checked and numbered."""
    return check_rows(datasets.Dataset.from_list(rows), "test rows", data)


def encode(tokenizer, rows=ROWS, **keys):
    data = spec(**keys)
    return encode_examples(rows_of(rows, data), data, tokenizer, "test rows")


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_an_example_is_eos_prompt_completion_eos_with_the_completion_scored(tokenizer):
    eos = tokenizer.eos_token_id
    first, empty, _ = encode(tokenizer, template="Q: {prompt}\nA:")
    prompt, completion = tokens(tokenizer, "Q: What does the cat see?\nA:"), tokens(tokenizer, " the river.")
    assert first.ids.tolist() == [eos, *prompt, *completion, eos]  # prompt and completion tokenized apart
    assert first.scored().tolist() == [False] * (1 + len(prompt)) + [True] * (len(completion) + 1)
    assert first.scored(prompt_too=True).tolist() == [False] + [True] * (len(first) - 1)  # never the leading EOS
    assert (first.row, empty.row) == (1, 2)
    # An empty prompt still has the template; the prompt tokens are those generation is given.
    assert empty.ids.tolist()[: empty.completion] == prompt_ids(tokenizer, "Q: {prompt}\nA:", "")
    assert apply_template("", "as is") == "as is" and apply_template("<{prompt}>", "x") == "<x>"


def test_bytes_and_words_are_the_scored_texts(tokenizer):
    [first] = encode(tokenizer, ROWS[:1])
    scored = first.scored()
    # " the river." is 11 bytes and 2 words; its EOS one more of each.
    assert first.nbytes[scored].sum() == len(b" the river.") + 1
    assert first.words[scored].sum() == 2 + 1


def test_a_long_example_is_refused_naming_its_row_or_loses_its_prompts_start(tokenizer):
    long_prompt = " ".join(["the old man follows the small house"] * 20)
    rows = [ROWS[0], {"prompt": long_prompt, "completion": " a child."}, ROWS[2]]
    with pytest.raises(ToolkitError) as refused:
        encode(tokenizer, rows)
    [line] = refused.value.problems
    assert line.startswith("data.block_size: row 2 (") and "prompt_left" in line

    kept = encode(tokenizer, rows, truncate="prompt_left")
    cut = kept[1]
    completion = tokens(tokenizer, " a child.")
    assert len(cut) == 64 and cut.truncated > 0
    assert cut.ids[-len(completion) - 1 : -1].tolist() == completion  # the completion whole, then EOS
    assert cut.ids[1 : cut.completion].tolist() == tokens(tokenizer, long_prompt)[cut.truncated :]  # the prompt's end

    too_long = {"prompt": "x", "completion": " " + long_prompt}
    with pytest.raises(ToolkitError) as alone:
        encode(tokenizer, [too_long], truncate="prompt_left")
    assert "row 1" in str(alone.value) and "completions alone" in str(alone.value)

    # Scoring sets only the context (truncation is the adapter's recipe's): the advice is a larger context.
    data = spec()
    with pytest.raises(ToolkitError) as scoring:
        encode_examples(rows_of(rows, data), data, tokenizer, "test rows", "--context")
    [line] = scoring.value.problems
    assert line.startswith("--context: row 2 (") and "set --context higher" in line and "data.truncate" not in line


def test_rows_named_in_a_refusal_are_the_files_rows_even_after_carving(tmp_path, tokenizer):
    """The evaluation share is carved out of shuffled rows; a message still names the row of the file."""
    long_prompt = " ".join(["the bird hears the moon"] * 30)
    rows = [dict(ROWS[i % 3]) for i in range(40)]
    rows[27] = {"prompt": long_prompt, "completion": " yes."}
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataSpec(train_files=[str(path)], format="prompt_completion", block_size=64, eval_fraction=0.5)
    with pytest.raises(ToolkitError, match=r"row 28 \(\d+ tokens\) of data\.(train|eval)_files"):
        prepare_data(data, tokenizer, cache=tmp_path / "cache")


def first_fit_decreasing(lengths, block_size) -> int:
    rooms = []
    for length in sorted(lengths, reverse=True):
        at = next((i for i, room in enumerate(rooms) if room >= length), None)
        if at is None:
            rooms.append(block_size - length)
        else:
            rooms[at] -= length
    return len(rooms)


@pytest.mark.parametrize("seed", range(5))
def test_best_fit_decreasing_places_every_example_once_in_no_more_blocks_than_first_fit(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(3, 60) for _ in range(rng.randint(50, 400))]
    packing = fit_blocks(lengths, 64)
    placed = sorted(i for block in packing.blocks for i in block)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in block) <= 64 for block in packing.blocks)
    assert len(packing.blocks) <= first_fit_decreasing(lengths, 64)
    assert packing.padding == pytest.approx(1 - sum(lengths) / (64 * len(packing.blocks)))


def test_mixed_lengths_pack_with_at_most_5_percent_padding():
    rng = random.Random(0)
    lengths = [rng.randint(8, 200) for _ in range(3000)]  # short and long answers, up to a fifth of the block
    assert fit_blocks(lengths, 1024).padding <= 0.05


def test_packed_arrays_hold_each_example_at_positions_from_zero(tokenizer):
    examples = encode(tokenizer)
    packing = fit_blocks([len(e) for e in examples], 64)
    assert len(packing.blocks) == 1  # three short examples share one block
    arrays = example_arrays(examples, packing)
    at = 0
    for i in packing.blocks[0]:
        span = slice(at, at + len(examples[i]))
        assert arrays["ids"][0, span].tolist() == examples[i].ids.tolist()
        assert arrays["positions"][0, span].tolist() == list(range(len(examples[i])))
        assert arrays["scored"][0, span].tolist() == examples[i].scored().tolist()
        at += len(examples[i])
    assert arrays["positions"][0, at:].tolist() == list(range(64 - at))  # the padding: a sequence of its own
    assert not arrays["scored"][0, at:].any()

    item = ExampleBlocks(arrays["ids"], arrays["scored"], arrays["positions"])[0]
    assert set(item) == {"input_ids", "labels", "position_ids"}
    learnt = item["labels"] != IGNORE_INDEX
    assert learnt.tolist() == arrays["scored"][0].tolist()
    assert (item["labels"][learnt] == item["input_ids"][learnt]).all()


def test_the_evaluation_stream_holds_each_example_with_only_completions_counted(tokenizer):
    examples = encode(tokenizer)
    stream = example_stream(examples)
    assert len(stream.ids) == 1 + sum(len(e) - 1 for e in examples) and stream.documents == 3  # EOS shared
    for example, start, end in zip(examples, stream.starts, stream.ends()):
        assert stream.ids[start - 1 : end + 1].tolist() == example.ids.tolist()  # EOS, prompt, completion, EOS
        assert (
            stream.scored[start : end + 1].tolist() == example.scored()[1:].tolist()
        )  # its EOS in front: the one before's
    assert stream.tokens == stream.scored.sum() == sum(e.scored().sum() for e in examples)
    assert stream.nbytes[~stream.scored].sum() == 0 and stream.words[~stream.scored].sum() == 0


def test_a_recipe_of_examples_is_packed_and_cached(tmp_path, tokenizer):
    rng = random.Random(1)
    subjects = ["the cat", "a dog", "my sister", "the bird"]
    rows = [
        {"prompt": f"Who is {rng.choice(subjects)}?" * rng.randint(1, 3), "completion": f" {rng.choice(subjects)}."}
        for _ in range(300)
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataSpec(train_files=[str(path)], format="prompt_completion", block_size=64, template="Q: {prompt}\nA:")
    packed = prepare_data(data, tokenizer, cache=tmp_path / "cache")
    train, evals = packed.stats["train"], packed.stats["eval"]
    assert train["documents"] + evals["documents"] == 300
    assert isinstance(packed.train, ExampleBlocks) and len(packed.train) == train["blocks"]
    assert train["blocks"] < train["documents"]  # several examples per block
    assert packed.padding == train["padding"] < 0.15
    assert packed.eval.scored is not None and packed.eval.tokens == evals["tokens"] < packed.eval.ids.size
    again = prepare_data(data, tokenizer, cache=tmp_path / "cache")  # from the cache: the same blocks
    assert again.fingerprint == packed.fingerprint
    assert np.array_equal(again.train.ids, packed.train.ids) and np.array_equal(again.eval.scored, packed.eval.scored)
    other = prepare_data(DataSpec(**{**data.__dict__, "template": "{prompt} ->"}), tokenizer, cache=tmp_path / "cache")
    assert other.fingerprint != packed.fingerprint  # the template decides the tokens

    # Rows of the cached (read-only, memory-mapped) arrays come out as tensors of their own, without
    # NumPy's "array is not writable" warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = again.train[0]
    row["input_ids"][0] = -1
    assert again.train[0]["input_ids"][0] != -1


@pytest.mark.parametrize(
    "rows, keys, expected",
    [
        ([{"question": "a", "completion": "b"}], {}, "data.prompt_column: test rows has no column 'prompt'"),
        ([{"prompt": "a", "answer": "b"}], {}, "data.completion_column: test rows has no column 'completion'"),
        ([{"q": "a", "a": "b"}], {"prompt_column": "q", "completion_column": "x"}, "no column 'x'"),
        ([{"prompt": "a", "completion": 3}], {}, "row 1 (a number) of test rows holds no text in column 'completion'"),
        (
            [ROWS[0], {"prompt": "b", "completion": "  "}, {"prompt": "c", "completion": ""}],
            {},
            "rows 2 and 3 of test rows have an empty completion",
        ),
        ([ROWS[0], {"completion": "b"}], {}, "row 2 of test rows has no 'prompt'"),
    ],
)
def test_bad_rows_are_refused_naming_the_column_and_rows(rows, keys, expected):
    with pytest.raises(ToolkitError) as info:
        rows_of(rows, spec(**keys))
    assert expected in str(info.value)


def test_csv_cells_are_the_text_they_hold_and_an_empty_prompt_is_empty(tmp_path):
    """CSV cannot quote a number as text: completions that look like numbers stay as written, and an empty
    prompt cell (bare or quoted) is the empty prompt, not a missing one."""
    path = tmp_path / "sums.csv"
    path.write_text('prompt,completion\n2+2=,4\n,1.50\n"",007\nNA,null\n')
    rows = read_files(str(path), examples=spec())
    assert rows["prompt"] == ["2+2=", "", "", "NA"]
    assert rows["completion"] == ["4", "1.50", "007", "null"]
    assert rows[ROW] == [1, 2, 3, 4]


def test_json_rows_of_another_kind_are_named_with_what_they_hold(tmp_path):
    path = tmp_path / "qa.jsonl"
    values = ["a", 5, ["x"], {"k": 1}, True, "b"]
    path.write_text("".join(json.dumps({"prompt": "p", "completion": v}) + "\n" for v in values))
    with pytest.raises(ToolkitError) as info:
        read_files(str(path), examples=spec())
    assert str(info.value).startswith(
        "data.completion_column (of the adapter's recipe): rows 2 (a number), 3 (a list), "
        "4 (an object) and 5 (true/false) of "
    )


def test_rows_are_numbered_from_one():
    numbered = rows_of(ROWS, spec())
    assert numbered[ROW] == [1, 2, 3]


def test_builtin_python_qa_is_each_sections_title_and_first_paragraph(tokenizer):
    from toolkit.sources import builtin

    topic = """The "pass" statement
********************

   pass_stmt ::= "pass"

"pass" is a null operation --- when it is executed, nothing happens. It
is useful as a placeholder. A third sentence that would make the completion too long to fit its block.

Changed in version 3.9: (only a note)

A later section
===============

New in version 3.5.

Its first paragraph of prose.
"""
    assert builtin.sections(topic)[0]["prompt"] == 'The "pass" statement'
    assert builtin.sections(topic)[0]["completion"].startswith('"pass" is a null operation --- when it is executed')
    assert builtin.sections(topic)[1] == {"prompt": "A later section", "completion": "Its first paragraph of prose."}
    files = builtin.python_qa()
    rows = {split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in files.items()}
    assert len(rows["train"]) > 150 and len(rows["validation"]) > 10
    assert all(row["prompt"] and row["completion"] for split in rows.values() for row in split)
    assert all(
        len(row["completion"]) <= builtin.COMPLETION_CHARACTERS or "." not in row["completion"][:-1]
        for row in rows["train"]
    )
    with pytest.raises(ToolkitError, match='set data.format = "prompt_completion"'):
        prepare_data(DataSpec(dataset="builtin:python-qa", block_size=64), tokenizer)

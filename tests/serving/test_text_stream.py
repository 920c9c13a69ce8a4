"""The stream's text, token by token, without a server: stop sequences cut, and the hold-back that keeps
every piece sent final (a partial stop sequence, or a character whose bytes are still arriving)."""

import random

import pytest
from transformers import AutoTokenizer

from toolkit.serving.text import REPLACEMENT, TextStream


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def stream_pieces(tokenizer, text: str, stops=()) -> tuple[TextStream, list[str]]:
    """Push `text`'s tokens one at a time, taking what is ready after each; the last piece is rest()."""
    stream = TextStream(tokenizer, tuple(stops))
    pieces = []
    for token in tokenizer.encode(text):
        stream.push(token)
        pieces.append(stream.ready())
        if stream.stopped:
            break
    pieces.append(stream.rest())
    return stream, pieces


def test_a_stop_sequence_ends_the_text_before_it(tokenizer):
    stream, pieces = stream_pieces(tokenizer, "the cat sat on the mat. The dog ran", stops=["mat"])
    assert stream.stopped
    assert stream.text == "the cat sat on the "
    assert "".join(pieces) == stream.text


def test_the_earliest_of_several_stop_sequences_wins(tokenizer):
    stream, pieces = stream_pieces(tokenizer, "one two three four", stops=["four", "two"])
    assert stream.text == "one "
    assert "".join(pieces) == "one "


def test_what_may_begin_a_stop_sequence_is_held_until_it_cannot(tokenizer):
    stream = TextStream(tokenizer, ("STOP",))
    sent = ""
    for token in tokenizer.encode("go ST"):
        stream.push(token)
        sent += stream.ready()
    assert stream.text == "go ST"
    assert sent == "go "  # "ST" may be the start of "STOP"
    for token in tokenizer.encode("AY"):
        stream.push(token)
        sent += stream.ready()
    assert sent == "go STAY"  # "STA" cannot begin it: all of it is sent
    assert not stream.stopped


def test_a_stop_sequence_that_arrives_in_pieces_is_never_sent(tokenizer):
    text = "we S" + "T" + "O" + "P here"
    for stops in (["STOP"], ["TOP", "STOP"], ["P h"]):
        stream, pieces = stream_pieces(tokenizer, text, stops)
        assert stream.stopped
        assert not any(stop in "".join(pieces) for stop in stops)
        assert "".join(pieces) == stream.text


def test_a_character_split_across_tokens_is_held_until_it_is_whole(tokenizer):
    # The tiny tokenizer never saw these characters: their UTF-8 bytes are separate byte-level tokens.
    text = "a \U0001f600 b \u00e9\u4e2d"
    ids = tokenizer.encode(text)
    assert len(ids) > len(text.split()), "the characters should split into several tokens"
    stream = TextStream(tokenizer)
    pieces = []
    for token in ids:
        stream.push(token)
        piece = stream.ready()
        assert REPLACEMENT not in piece
        pieces.append(piece)
    pieces.append(stream.rest())
    assert "".join(pieces) == text == stream.text


def test_the_pieces_always_join_into_the_final_text(tokenizer):
    """Random texts (with characters that split, and stop sequences near the end): whatever is sent is a
    prefix of the final text, and the pieces together are exactly it."""
    rng = random.Random(7)
    alphabet = list("abc STOP.\n") + ["\u00e9", "\U0001f600", "\u4e2d"]
    for _ in range(60):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        stops = rng.sample(["STOP", "S", "\n\n", "b\u00e9", "OP."], rng.randint(0, 3))
        stream = TextStream(tokenizer, tuple(stops))
        sent = ""
        for token in tokenizer.encode(text):
            stream.push(token)
            sent += stream.ready()
            assert stream.text.startswith(sent), (text, stops)
            if stream.stopped:
                break
        sent += stream.rest()
        assert sent == stream.text
        cut = min([text.find(s) for s in stops if s in text], default=len(text))
        assert sent == text[:cut], (text, stops)


def test_push_returns_where_each_token_text_starts(tokenizer):
    stream = TextStream(tokenizer)
    offsets = [stream.push(token) for token in tokenizer.encode("hello there world")]
    assert offsets[0] == 0
    assert offsets == sorted(offsets)
    assert offsets[-1] < len(stream.text)


def test_a_stream_that_is_not_incremental_decodes_once_at_the_end(tokenizer):
    ids = tokenizer.encode("plain text \u00e9")
    stream = TextStream(tokenizer, incremental=False)
    for token in ids:
        stream.push(token)
    assert stream.text == ""  # nothing decoded on the way
    assert stream.rest() == tokenizer.decode(ids, skip_special_tokens=True)


def test_special_tokens_are_left_out_as_generate_leaves_them_out(tokenizer):
    ids = tokenizer.encode("before") + [tokenizer.eos_token_id] + tokenizer.encode(" after")
    stream = TextStream(tokenizer)
    text = ""
    for token in ids:
        stream.push(token)
        text += stream.ready()
    text += stream.rest()
    assert text == "before after"

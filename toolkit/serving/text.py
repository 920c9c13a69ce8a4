"""A row's text as its tokens come: pieces that are safe to send, and stop sequences cut out.

The whole of a row's tokens is decoded after each new one, exactly as `toolkit.generate` decodes its
output (special tokens skipped), so the text at the end is the same. What is sent is held back while it
ends in an incomplete UTF-8 character (a byte-level token can split one) or in what may be the start of a
stop sequence, so that the pieces of a stream always join into the final text.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what decoding makes of an incomplete UTF-8 character


class TextStream:
    def __init__(self, tokenizer, stops: tuple[str, ...] = (), incremental: bool = True):
        """`incremental`: decode after every token (for a stream, stop sequences, offsets); otherwise the
        text is decoded once, by rest()."""
        self.tokenizer, self.stops, self.incremental = tokenizer, stops, incremental
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of `text` handed out
        self.stopped = False  # a stop sequence appeared: `text` ends before it

    def push(self, token: int) -> int:
        """Add a token; returns where its text starts (its offset in `text`)."""
        offset = len(self.text)
        self.ids.append(token)
        if not self.incremental:
            return offset
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for stop in self.stops:
            at = self.text.find(stop)
            if at >= 0:
                self.text, self.stopped = self.text[:at], True
        return offset

    def ready(self) -> str:
        """The text not yet sent that no later token can change."""
        end = len(self.text.rstrip(REPLACEMENT))
        held = max(
            (
                k
                for stop in self.stops
                for k in range(1, min(len(stop), end + 1))
                if self.text[end - k : end] == stop[:k]
            ),
            default=0,
        )
        return self._take(max(end - held, self.sent))

    def rest(self) -> str:
        """Everything not yet sent: the row is over."""
        if not self.incremental:
            self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        piece, self.sent = self.text[self.sent : end], end
        return piece

"""cinet.errors: the one-line quotes of a library's exception."""

from __future__ import annotations

from cinet.errors import describe, first_line


def test_first_line_and_describe_quote_an_exception_on_one_line() -> None:
    long = ValueError("\n  first line here. Second sentence\nsecond line")
    assert first_line(long) == "first line here. Second sentence"
    assert first_line(long, limit=5) == "first"
    assert describe(long) == "ValueError: first line here. Second sentence"
    assert describe(long, first_sentence=True) == "ValueError: first line here"
    assert describe(long, 10) == "ValueError: first line"
    empty = KeyError()
    assert first_line(empty) == "KeyError" and describe(empty) == "KeyError"
    assert describe(OSError("  \n ")) == "OSError"

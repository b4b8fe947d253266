"""Input checks shared by every entry point that embeds text (service, backends, retrievers)."""

from __future__ import annotations

from typing import Any


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of str, or an error naming what is wrong and where.

    A single str, None or a non-str item raises :class:`TypeError` naming the index; a str
    that is not valid Unicode (a lone surrogate) raises :class:`ValueError` naming the index —
    bad input, never a broken model, so it must not move the fallback chain.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a list of str, not a single {type(texts).__name__}; "
                        "wrap one text in a list: [text]")
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        bad = next(i for i, t in enumerate(texts) if _lone_surrogate(t))
        raise ValueError(f"texts[{bad}] is not valid Unicode (it holds a lone surrogate); "
                         "decode your input with errors='replace'") from None
    return list(texts)


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False

"""The one error type for everything a user can get wrong in a configuration.

A `ConfigError` always says where (file, app, key) and what was expected, on one line,
so that the CLI can print it as is, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable

_REPR_MAX = 60


class ConfigError(Exception):
    """A configuration mistake: `str()` is one line fit to show to the user."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        app: str | None = None,
        key: str | None = None,
    ) -> None:
        self.source = source
        """A file path, "command line" or "control request"."""
        self.app = app
        """The app's name, "apps[2]" when the name is not known yet, or None."""
        self.key = key
        """The key as the user wrote it (an alias stays an alias), or None."""
        self.message = message
        super().__init__(self.__str__())

    def _where(self) -> list[str]:
        parts = [self.source]
        if self.app is not None:
            parts.append(self.app if self.app.startswith("apps[") else f"app {self.app!r}")
        return parts

    def __str__(self) -> str:
        parts = self._where()
        if self.key is not None:
            parts.append(f"key {self.key!r}")
        parts.append(self.message)
        return ": ".join(parts)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing, xdist).
        return (_rebuild, (self.source, self.message, self.app, self.key, type(self)))


class UnknownKeyError(ConfigError):
    """An unknown key: the message names the key itself ("unknown key 'x' (did you ...)")."""

    def __str__(self) -> str:
        return ": ".join([*self._where(), self.message])


def _rebuild(
    source: str, message: str, app: str | None, key: str | None, cls: type[ConfigError]
) -> ConfigError:
    return cls(source, message, app=app, key=key)


def short_repr(value: object) -> str:
    """`repr(value)`, cut to a length that keeps an error message on one line."""
    text = repr(value).replace("\n", "\\n")
    if len(text) > _REPR_MAX:
        text = text[: _REPR_MAX - 3] + "..."
    return text


def _squash(word: str) -> str:
    # "maxRestarts", "max-restarts" and "max_restarts" are the same mistake.
    return word.lower().replace("_", "").replace("-", "")


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to `word`, or None when nothing is close enough."""
    pool = sorted(set(candidates))
    squashed = {_squash(c): c for c in pool}
    if _squash(word) in squashed:
        return squashed[_squash(word)]
    import difflib  # only when there is a mistake to suggest a fix for

    close = difflib.get_close_matches(_squash(word), list(squashed), n=1, cutoff=0.6)
    return squashed[close[0]] if close else None


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" or an empty string, to append to a message."""
    best = did_you_mean(word, candidates)
    return f" (did you mean {best!r}?)" if best is not None else ""

"""Finding a secret value anywhere: in a text, an answer, a file or a whole folder.

A test makes a value with `leak_value()` (only letters, digits, `_` and `-`: HTML, JSON,
URL and shell quoting all leave it unchanged, so the plain form is found in any of
them; or with `special` characters between two random runs, each run searched on its
own), then feeds everything corral wrote or answered to a `LeakScan`, which looks for
the value and its encoded forms:

- the value itself (UTF-8, and UTF-16-LE in raw bytes);
- its base64, standard and URL-safe, with and without padding;
- for each of the 3 byte alignments, the part of the base64 that depends on the value
  alone: found even when the value was base64-encoded inside a longer text
  (`NAME=value`, a JSON document, an environment block);
- its hex, lower and upper case.

gzip files (rotated logs) are searched decompressed as well as raw. A hit is reported
with where it was, which form, and the text around it with the form itself masked.
"""

from __future__ import annotations

import base64
import gzip
import logging
import re
import secrets
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "crlLEAK"


SPECIAL = " \"'<>&\\$`;%+=é€😀"
"""Characters that quoting (HTML, JSON, URL, shell, repr) changes, and multi-byte UTF-8."""
_RUN = re.compile(rb"[A-Za-z0-9_-]{16,}")


def leak_value(marker: str = MARKER, *, special: str = "") -> str:
    """A new, unique value: the marker and 32 random URL-safe characters; with `special`,
    those characters, then 32 random ones more. Each random run is searched on its own
    too (see `forms_of`), so a value quoted or escaped in any way is still found."""
    value = f"{marker}{secrets.token_urlsafe(24)}"
    return f"{value}{special}{secrets.token_urlsafe(24)}" if special else value


@dataclass(frozen=True)
class Form:
    label: str
    data: bytes


def _b64_cores(raw: bytes, encode: Callable[[bytes], bytes], name: str) -> list[Form]:
    """The characters of base64(prefix + raw + suffix) fixed by `raw` alone, for a prefix
    of 0, 1 and 2 bytes: character j covers bits 6j..6j+5, the prefix bits 0..8k-1."""
    cores = []
    for k in range(3):
        encoded = encode(b"\0" * k + raw)
        first = -(-8 * k // 6)  # ceil: the first character with no prefix bit
        last = 8 * (k + len(raw)) // 6  # the characters after it hold suffix bits too
        cores.append(Form(f"{name} inside a longer text (alignment {k})", encoded[first:last]))
    return cores


def forms_of(value: str) -> list[Form]:
    """Every form of `value` a scan looks for (no duplicates, longest first). A value with
    characters quoting may change: also the forms of each run of 16 or more URL-safe
    characters in it (escaping leaves those alone; base64 and hex of the whole value
    hold theirs, at one of the three alignments)."""
    raw = value.encode()
    std, url = base64.b64encode(raw), base64.urlsafe_b64encode(raw)
    found = [
        Form("the value", raw),
        Form("the value in UTF-16-LE", value.encode("utf-16-le")),
        Form("base64", std),
        Form("base64 unpadded", std.rstrip(b"=")),
        Form("urlsafe base64", url),
        Form("urlsafe base64 unpadded", url.rstrip(b"=")),
        *_b64_cores(raw, base64.b64encode, "base64"),
        *_b64_cores(raw, base64.urlsafe_b64encode, "urlsafe base64"),
        Form("hex", raw.hex().encode()),
        Form("HEX", raw.hex().upper().encode()),
    ]
    runs = _RUN.findall(raw)
    if runs != [raw]:
        for n, run in enumerate(runs, 1):
            part = f"random part {n} of the value"
            found += [
                Form(part, run),
                Form(f"{part} in UTF-16-LE", run.decode().encode("utf-16-le")),
                *_b64_cores(run, base64.b64encode, f"base64 of {part}"),
                *_b64_cores(run, base64.urlsafe_b64encode, f"urlsafe base64 of {part}"),
                Form(f"hex of {part}", run.hex().encode()),
                Form(f"HEX of {part}", run.hex().upper().encode()),
            ]
    unique: dict[bytes, Form] = {}
    for form in found:
        unique.setdefault(form.data, form)
    return sorted(unique.values(), key=lambda f: -len(f.data))


@dataclass(frozen=True)
class Hit:
    where: str
    form: str
    offset: int
    context: str

    def __str__(self) -> str:
        return f"{self.where}: {self.form} at byte {self.offset}: ...{self.context}..."


@dataclass
class LeakScan:
    """Everything searched so far (`places`) and every form found (`hits`)."""

    values: list[str]
    places: list[str] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._forms = [(v, f) for v in self.values for f in forms_of(v)]

    def add(self, value: str) -> None:
        self.values.append(value)
        self._forms.extend((value, f) for f in forms_of(value))

    def text(self, where: str, data: str | bytes) -> list[Hit]:
        """Search one answer or file content; returns (and records) its hits."""
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        self.places.append(where)
        found = []
        for value, form in self._forms:
            start = blob.find(form.data)
            if start < 0:
                continue
            which = f"{form.label} of value #{self.values.index(value) + 1}"
            found.append(Hit(where, which, start, _context(blob, start, form.data)))
        self.hits.extend(found)
        return found

    def file(self, path: Path, where: str | None = None) -> list[Hit]:
        """A file's raw bytes, and its decompressed content when it is gzip."""
        name = where or str(path)
        blob = path.read_bytes()
        found = self.text(name, blob)
        if blob[:2] == b"\x1f\x8b":
            try:
                found += self.text(f"{name} (gunzipped)", gzip.decompress(blob))
            except (OSError, EOFError, zlib.error) as exc:
                self.hits.append(Hit(name, f"unreadable gzip ({exc})", 0, ""))
        return found

    def tree(self, root: Path) -> list[Path]:
        """Every regular file under `root` (symlinks are not followed); the files searched."""
        searched = []
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                self.file(path)
            except FileNotFoundError:
                continue  # removed while the scan ran (a temporary file, a pruned log)
            searched.append(path)
        return searched

    def report(self, hits: Iterable[Hit] | None = None) -> str:
        listed = list(self.hits if hits is None else hits)
        return f"a secret value leaked in {len(listed)} place(s):\n  " + "\n  ".join(
            str(h) for h in listed
        )

    def assert_clean(self) -> None:
        assert not self.hits, self.report()


def _context(blob: bytes, start: int, form: bytes, width: int = 60) -> str:
    """The text around a hit, the form itself shown as <FORM>."""
    before = blob[max(0, start - width) : start]
    after = blob[start + len(form) : start + len(form) + width]
    return (before + b"<FORM>" + after).decode("utf-8", "backslashreplace")


class RecordCollector(logging.Handler):
    """Every log record emitted in this process, formatted with its arguments and
    exception text: a place a leak search must read too."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

"""WebDataset's key rules, in one place for reading and writing.

A tar member's key is its path up to the first dot of its base name, and the rest is its
extension (`a/b.seg.png` is key `a/b`, extension `seg.png`), as webdataset's `base_plus_ext`
and `datasets`' WebDataset loader split it. A key kcap writes back must survive that split
and every reader's handling of paths, so an empty key, one whose base name holds a dot, one
with a `.` or `..` part, a leading, trailing or doubled slash, a backslash or a control
character is refused with a reason.
"""

from __future__ import annotations

import re

# The same split as webdataset.tariterators.base_plus_ext.
_KEY_AND_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Far below tar's limits (PAX has none): a longer key is a mistake, not a name.
MAX_KEY_CHARS = 512

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
# Members small enough to carry along as text (an existing caption, a json record).
TEXT_EXTENSIONS = frozenset({"txt", "json", "caption", "cls", "id", "url", "text"})


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member name; extension "" when the base name has no dot."""
    match = _KEY_AND_EXT.match(name)
    if match is None:
        return name, ""
    return match.group(1), match.group(2).lower()


def key_problem(key: str) -> str | None:
    """Why key cannot be written back as a WebDataset key, or None when it can."""
    if not key:
        return "the key is empty"
    parts = key.split("/")
    if "." in parts[-1]:
        return f"the key {key!r} contains a dot, so WebDataset readers would split it there"
    if "" in parts or "." in parts or ".." in parts:
        return f"the key {key!r} has an empty, '.' or '..' path part"
    if "\\" in key or _CONTROL.search(key):
        return f"the key {key!r} contains a backslash or a control character"
    if len(key) > MAX_KEY_CHARS:
        return f"the key is {len(key)} characters long (at most {MAX_KEY_CHARS})"
    return None


def ext_problem(ext: str) -> str | None:
    """Why ext cannot be a member extension kcap writes, or None."""
    if not ext or not re.fullmatch(r"[a-z0-9]+", ext):
        return f"the extension {ext!r} is not lowercase letters and digits"
    return None

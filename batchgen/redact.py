"""Showing a URL that may carry a password: in an error, a log line or a report.

A URL given by a user (the API base, a --state URL) may hold credentials in its userinfo
(`https://user:secret@host/`). Anything batchgen prints quotes it through `redact_url`,
which also copes with text that does not parse as a URL (that is when it is quoted: in
the error saying so).
"""

from __future__ import annotations

#: what stands where a password was
MASK = "***"


def redact_url(text: str) -> str:
    """`text` without anything that looks like a password in its userinfo (parsable as
    a URL or not; an `@` further on only makes it hide more than needed)."""
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme, sep, userinfo = head.partition("://")
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:{MASK}@{tail}" if sep else \
        f"{MASK}@{tail}"

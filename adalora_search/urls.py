"""URLs a study file names, checked and masked without opening anything (no Optuna, no database driver).

The study file's ``study.storage`` (a SQLAlchemy URL), ``study.artifact_store`` (a directory or
``s3://BUCKET``) and tracking URIs are checked here, so ``study/`` rules and ``search/`` share one
implementation; ``mask`` is the one place a password is hidden before a URL is printed or stored.
"""

from __future__ import annotations

import sqlalchemy
from sqlalchemy.engine import make_url

from adalora_search.errors import UserError


def ambiguous_password(url: str) -> bool:
    """True when the URL's password holds a raw '@': SQLAlchemy would read part of it as host or port."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.startswith("sqlite"):
        return False
    if rest.split("?", 1)[0].count("@") > 1:
        return True
    try:  # e.g. a '?' before the '@'s: SQLAlchemy ends the password at the first '@' regardless
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "@" in rest.partition("@")[2]
    return "@" in (parsed.host or "") + (parsed.database or "")


def _redacted(url: str) -> str:
    """Scheme and user name only: where the password ends cannot be known."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split(':', 1)[0].split('@', 1)[0]}:***@..."


def url_problem(url: str) -> str | None:
    """Why the storage URL cannot be used as written (never quoting the password), or None."""
    if ambiguous_password(url):
        # worded to share no 3 letters with typical passwords' fragments ("print", "characters"...)
        return (
            "the password holds a raw '@', so SQLAlchemy would read part of it as the host; "
            "percent-encode the password with urllib.parse.quote(password, safe='') "
            "('@' becomes %40, ':' %3A, '/' %2F)"
        )
    try:
        make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return (
            "not a SQLAlchemy URL; e.g. sqlite:///study.db or postgresql://name@host/db "
            "(percent-encode the password with urllib.parse.quote(password, safe=''))"
        )
    return None


def check_url(url: str, field: str = "study.storage") -> None:
    """Raise a ``UserError`` naming ``field`` when the URL cannot be used as written."""
    problem = url_problem(url)
    if problem:
        raise UserError(f"{field} = {mask(url)!r}: {problem}")


def mask(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or store (storage, tracking, any URL).

    A text without ``://`` (a local path) is returned as it is; a URL with a raw '@' in its password
    keeps only its scheme and user name, since where the password ends cannot be known.
    """
    if "://" not in url:  # a local path, or a URL missing its "//": never shown if it may hold a password
        return url if "@" not in url else "<unparseable URL>"
    if ambiguous_password(url):
        return _redacted(url)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "<unparseable URL>"


def redact(text: str, url: str) -> str:
    """``text`` (an error message about ``url``) with the URL's password, if any, replaced by ***."""
    try:
        password = make_url(url).password if "://" in url and not ambiguous_password(url) else None
    except (sqlalchemy.exc.ArgumentError, ValueError):
        password = None
    if password is None and "@" in url:  # unparseable or ambiguous: everything between "user:" and the last '@'
        userinfo = url.partition("://")[2].rpartition("@")[0]
        password = userinfo.partition(":")[2] or None
    return text.replace(password, "***") if password else text


def artifact_location_problem(location: str) -> str | None:
    """Why ``location`` cannot be an artifact store (a directory or ``s3://BUCKET``), or None."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return None
    if scheme != "s3":
        return "an artifact store is a directory or s3://BUCKET; other URLs are not supported"
    if not rest or "/" in rest.rstrip("/"):
        return "write an S3 store as s3://BUCKET (the bucket alone; artifacts are named by their id)"
    return None

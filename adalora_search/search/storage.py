"""Study storage: the default URL, what can be checked before opening it, heartbeats, and a claim lock
for exact n_trials.

SQLite (a file beside the study file) is the embedded default; PostgreSQL is the backend for
many workers and machines. Workers claim a trial under a lock (a PostgreSQL advisory lock, or a
file lock for SQLite) so that the study ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from adalora_search.errors import UserError
from adalora_search.urls import check_url, mask, redact


def default_url(study_file: str | Path, name: str) -> str:
    """``sqlite:///<study file dir>/<study file stem>.db`` (absolute, so any working directory works).

    Named after the file, not ``study.name``: two study files in one folder never share a database
    by accident (``name`` is unused here; kept for callers).
    """
    path = Path(study_file).resolve()
    return f"sqlite:///{path.parent / f'{path.stem}.db'}"


def check_reachable_here(url: str, field: str = "study.storage") -> None:
    """What ``validate`` can check of a storage without opening it: a database SQLAlchemy knows (a driver
    installed) and, for SQLite, an existing folder for the file.

    Raises:
        UserError: naming ``field`` and the fix.
    """
    check_url(url, field)
    parsed = make_url(url)
    try:
        parsed.get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise UserError(
            f"{field} = {mask(url)!r}: {parsed.drivername!r} is not a database SQLAlchemy can open here "
            f"({type(exc).__name__}); write sqlite:///FILE or postgresql://USER@HOST/DB (lower case), "
            "and install the driver (pip install psycopg[binary] for PostgreSQL)"
        ) from None
    database = parsed.database or ""
    local = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if local and not Path(database).parent.is_dir():
        raise UserError(
            f"{field} = {mask(url)!r}: directory {Path(database).parent} does not exist; create it or "
            "change the URL (a relative file is relative to the study file)"
        )


def open_storage(url: str, heartbeat_interval: int = 30, max_retry: int = 2) -> RDBStorage:
    """An RDBStorage with heartbeats; a killed worker's trial is failed and re-queued.

    Workers started at the same instant on an empty database would race to create Optuna's tables
    (optuna/optuna#1092): the creation runs under a lock (a PostgreSQL advisory lock, a MySQL named
    lock, the SQLite file lock), and an "already exists" error is retried.

    Raises:
        UserError: the URL is malformed, the server cannot be reached, or the driver is missing.
    """
    check_reachable_here(url)  # the URL as written, the dialect, a SQLite file's folder
    parsed = make_url(url)
    engine_kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_timeout(parsed.get_backend_name())}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with named_lock(url, "schema"):
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=heartbeat_interval * 2,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            if _already_exists(exc) and attempt + 1 < SCHEMA_ATTEMPTS:
                time.sleep(0.2 * (attempt + 1))  # another process created the tables meanwhile: open them
                continue
            raise _storage_error(url, exc) from None
    raise AssertionError("unreachable")


SCHEMA_ATTEMPTS = 5


def _already_exists(exc: BaseException) -> bool:
    """The "already exists" family: a concurrent creation of the same table, type, index or version row."""
    text = str(exc).lower()
    return isinstance(
        exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError)
    ) and ("already exists" in text or "duplicate" in text or "unique constraint" in text)


def _storage_error(url: str, exc: BaseException) -> UserError:
    """A clear error: the connection hint only for connection failures."""
    parsed = make_url(url)
    reason = redact(str(exc).splitlines()[0][:200], url)
    if isinstance(exc, ImportError):
        hint = f"install the database driver for {parsed.drivername} (e.g. pip install psycopg[binary])"
    elif isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) and not _already_exists(exc):
        hint = "check that the server runs and the URL is right"
    else:
        hint = "run the command again; if it repeats, check the database (another program may use these tables)"
    return UserError(f"study.storage = {mask(url)!r}: cannot open the storage ({type(exc).__name__}: {reason}); {hint}")


def _connect_timeout(backend: str) -> dict:
    return {"connect_timeout": 10} if backend in ("postgresql", "mysql") else {}


def claim_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """Serialise 'count the trials, then ask for one' across workers sharing this storage (``named_lock``)."""
    return named_lock(url, "claim")


@contextlib.contextmanager
def named_lock(url: str, name: str) -> Iterator[None]:
    """A lock held across processes (and machines) sharing the storage at ``url``.

    SQLite: a ``filelock.FileLock`` on ``<database>.lock`` beside the database (an OS lock, released
    when a process dies; the file stays; never nested); PostgreSQL: an advisory lock; MySQL: a named
    lock (``GET_LOCK``); other backends: none (best effort).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    key = zlib.crc32(f"adalora-search-{name}".encode())
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        with FileLock(f"{parsed.database}.lock"):
            yield
    elif backend in ("postgresql", "mysql"):
        lock, unlock = (
            ("SELECT pg_advisory_lock(%d)", "SELECT pg_advisory_unlock(%d)")
            if backend == "postgresql"
            else ("SELECT GET_LOCK('adalora-search-%d', 600)", "SELECT RELEASE_LOCK('adalora-search-%d')")
        )
        with _lock_engine(url).connect() as conn:
            conn.execute(sqlalchemy.text(lock % key))
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text(unlock % key))
    else:
        yield


_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    if url not in _ENGINES:
        _ENGINES[url] = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args=_connect_timeout(make_url(url).get_backend_name())
        )
    return _ENGINES[url]


class Heartbeat:
    """Record a trial's heartbeat every ``interval`` seconds while it runs (what optimize() does)."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: int):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        if hasattr(self._storage, "record_heartbeat"):  # RDBStorage, also behind Optuna's cache wrapper
            self._storage.record_heartbeat(self._trial_id)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # a missed beat is retried at the next interval

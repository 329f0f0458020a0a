"""What callers show the broker: role credentials and an edge's proof of its own id.

Both sides import these: the client and the edge to send them, the broker to check them.

* **Role credentials.** Each call may carry ``authorization: Bearer <secret>``; the
  broker maps the secret to a role (``edge``, ``publisher`` or ``admin``) and lets each
  role call only its own methods. Secrets live in files, one or more per file, one a
  line: the broker accepts every line, a client sends the first, so rotating a secret
  is "add the new one second, then move it first, then drop the old one" with no
  restart and no moment where a caller is refused.
* **Edge keys.** An edge worker makes a random key when it starts and derives its edge
  id from it (:func:`edge_id_for`); it sends the key on ``Attach`` in
  ``django-ws-edge-key``. The broker derives the id again and refuses a hello that names
  another one, so an edge id seen in ``Stats``, in a channel name or in a log is of no
  use without the key, and a broker needs no stored bindings to survive a restart.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("django_ws.credentials")

AUTHORIZATION = "authorization"
"""Metadata key of the role credential (lower case, as gRPC metadata keys must be)."""

BEARER = "Bearer "

EDGE_KEY = "django-ws-edge-key"
"""Metadata key carrying an edge worker's key on ``Attach``."""

EDGE_ID_PREFIX = "ws."

_EDGE_ID_PERSON = b"django-ws-edge"  # domain separation: this hash names edges only

MIN_SECRET_LENGTH = 16
"""Shortest role secret accepted, in characters: a guessable secret is no secret."""

PLACEHOLDER_PREFIX = "replace-me"
"""How the placeholders of the plain Kubernetes manifests start: refused, so that the
manifests cannot run with secrets everyone can read in this repository."""

_SECRET_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))


class Role(enum.Enum):
    """Who a caller is, as far as the broker is concerned."""

    EDGE = "edge"
    PUBLISHER = "publisher"
    ADMIN = "admin"


class SecretFileError(ValueError):
    """A secrets file is missing, empty or holds something that cannot be a secret."""


def new_edge_key() -> str:
    """A fresh random edge key (256 bits, hex so it is valid gRPC metadata)."""
    return secrets.token_hex(32)


def edge_id_for(key: str) -> str:
    """The edge id that ``key`` proves: ``ws.`` and 128 bits of a keyed BLAKE2b hash.

    It follows the edge id rule (letters, digits and periods) and is 35 characters long,
    leaving room in a channel name (at most 100) for the part after ``!``.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=16, person=_EDGE_ID_PERSON)
    return EDGE_ID_PREFIX + digest.hexdigest()


def bearer(secret: str) -> tuple[str, str]:
    """The metadata entry carrying a role secret."""
    return (AUTHORIZATION, BEARER + secret)


def parse_secrets(text: str, source: str) -> tuple[str, ...]:
    """The secrets listed in ``text``, one a line (blank lines ignored); ``source``
    names where they came from in errors, never the secrets themselves."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value:
            continue
        if len(value) < MIN_SECRET_LENGTH or not set(value) <= _SECRET_CHARACTERS:
            raise SecretFileError(
                f"{source}: line {number} is not a usable secret: it must be at least "
                f"{MIN_SECRET_LENGTH} printable ASCII characters with no spaces "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        if value.lower().startswith(PLACEHOLDER_PREFIX):
            raise SecretFileError(
                f"{source}: line {number} is a placeholder, not a secret: put a random one "
                "there (e.g. the output of `openssl rand -hex 32`)"
            )
        found.append(value)
    if not found:
        raise SecretFileError(f"{source}: the file holds no secret (one per line)")
    return tuple(found)


def read_secrets(path: Path, source: str) -> tuple[str, ...]:
    """The secrets in the file at ``path``; raises :class:`SecretFileError`."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{source}: cannot read {str(path)!r}: {exc}") from None
    return parse_secrets(text, f"{source} ({path})")


RECHECK_SECONDS = 1.0
"""How often a :class:`SecretFile` looks for a new version of its file, at most."""


def _stamp(path: Path) -> tuple[int, int, int]:
    # stat() follows symlinks: a Kubernetes Secret volume swaps a symlink on update.
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class SecretFile:
    """A secrets file, read at start and again whenever it changes.

    The first read raises :class:`SecretFileError` (a broker or client must not start
    with a credential it cannot read); later, a file that goes missing or turns bad is
    logged and the last good secrets stay in use, so a half-written update never locks
    everyone out.
    """

    def __init__(
        self,
        path: Path,
        source: str,
        *,
        recheck: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.source = source
        self._recheck = recheck
        self._clock = clock
        self._stamp = _stamp_or_none(path)
        self._values = read_secrets(path, source)
        self._checked = clock()
        self._failing = False

    @property
    def values(self) -> tuple[str, ...]:
        """Every secret the file lists now (accepted by the broker)."""
        now = self._clock()
        if now - self._checked >= self._recheck:
            self._checked = now
            self._reload()
        return self._values

    @property
    def first(self) -> str:
        """The secret a client sends: the file's first line."""
        return self.values[0]

    def _reload(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            values = read_secrets(self.path, self.source)
        except (OSError, SecretFileError) as exc:
            if not self._failing:
                logger.warning("%s; keeping the secrets read before", exc)
                self._failing = True
            return
        self._stamp, self._values, self._failing = stamp, values, False
        logger.info("%s: read %d secrets from %s", self.source, len(values), self.path)


def _stamp_or_none(path: Path) -> tuple[int, int, int] | None:
    try:
        return _stamp(path)
    except OSError:
        return None  # read_secrets, called next, names the problem

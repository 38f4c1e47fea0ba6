"""The local runtime's control secret: `/.knsd/update` and `/.knsd/shutdown` need it, the rest stays open.

The runtime writes a random token to `<state dir>/control.token` (mode 0600) before it listens; the CLI,
run by the same user, reads it and sends it as `Authorization: Bearer TOKEN`. Anyone else who can reach
the route (e.g. with `--local-address 0.0.0.0:8080`) gets 401 without a token and 403 with a wrong one.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from knsd.local.state import private_dir

TOKEN_FILE = "control.token"
# Where the token is, as error answers say it (never the path: the answer may go to a stranger).
WHERE = "the knsd CLI of the user who deployed the service reads it from the service's state folder"
GUARDED = frozenset({"update", "shutdown"})  # what changes or stops the service


def token_path(root: Path) -> Path:
    return root / TOKEN_FILE


def create_token(root: Path) -> str:
    """A fresh token in `root/control.token`, readable by the owner only (0600 from the start)."""
    path = token_path(private_dir(root))
    path.unlink(missing_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    return token


def read_token(root: Path) -> str | None:
    try:
        return token_path(root).read_text().strip() or None
    except OSError:
        return None


def auth_header(root: Path) -> dict[str, str]:
    """The header the CLI sends on control requests (empty if there is no token to read)."""
    token = read_token(root)
    return {"Authorization": f"Bearer {token}"} if token else {}


def check(header: str | None, token: str) -> int | None:
    """None if `header` carries the token; else the HTTP status: 401 (none given) or 403 (wrong)."""
    if not header:
        return 401
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        return 403
    return None

"""Who may use the FHE service: bearer tokens from a file or the environment.

The encryption keeps a client's images and answers from the server, but not the server from
its clients: anyone who can connect can upload keys (hundreds of MiB of memory each) and spend
seconds of CPU per request. So every request except ``/health`` carries
``Authorization: Bearer TOKEN``, checked before its body is read, and a service without tokens
listens only on a loopback address (``check_exposure``).

Each token has a name, the owner its key sets are filed under: quotas and eviction are per
owner (``keystore``), so one token's uploads never push out another's keys. Tokens are compared
as sha256 digests with ``hmac.compare_digest``, against every known token, so the time taken
says nothing about how much of a guess was right.

Token files and ``ROBUSTLAB_FHE_TOKENS`` hold entries ``NAME:TOKEN`` or ``TOKEN`` (named by
its digest), one per line or separated by commas; ``#`` starts a comment.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from robustlab.crypto.errors import AccessError

TOKENS_ENV = "ROBUSTLAB_FHE_TOKENS"
"""The server's tokens, when no ``--token-file`` is given (or in addition to it)."""
TOKEN_ENV = "ROBUSTLAB_FHE_TOKEN"
"""The one token a client sends, when no token file is given."""
ANONYMOUS = "anonymous"
"""The one owner of every key set on a loopback service without tokens."""
MIN_TOKEN_LENGTH = 16
TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")  # RFC 6750's b64token: safe in a header
NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
SECURITY_DOC = "docs/encrypted-inference.md, section Security model"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class TokenSet:
    """The tokens a server accepts, kept only as digests, each with its owner's name."""

    entries: tuple[tuple[bytes, str], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.entries]

    def identify(self, token: str) -> str | None:
        """The name of ``token``, or None; every entry is compared, whatever matches."""
        presented = _digest(token)
        found: str | None = None
        for digest, name in self.entries:
            matched = hmac.compare_digest(presented, digest)
            found = name if matched else found
        return found

    def owner(self, authorization: str | None) -> str | None:
        """Who sent a request with this ``Authorization`` header; None: refuse it."""
        if not self.enabled:
            return ANONYMOUS
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.identify(token.strip())


def _entries(text: str, source: str) -> list[tuple[str, str]]:
    """``(name, token)`` pairs from a token file's or variable's text, each checked."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].replace(",", " ").split():
            name, sep, token = item.rpartition(":")
            token = token if sep else item
            if not TOKEN.match(token) or len(token) < MIN_TOKEN_LENGTH:
                raise AccessError(
                    f"{source}: a token must be at least {MIN_TOKEN_LENGTH} characters of "
                    "A-Z a-z 0-9 - . _ ~ + / (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))'`); one entry is not"
                )
            name = name if sep else f"token-{hashlib.sha256(token.encode()).hexdigest()[:8]}"
            if not NAME.match(name):
                raise AccessError(
                    f"{source}: token name {name[:64]!r} must be 1-64 characters of "
                    "A-Z a-z 0-9 _ . -"
                )
            pairs.append((name, token))
    return pairs


def parse_tokens(text: str, source: str = "tokens") -> TokenSet:
    """The tokens in ``text``; a repeated token or name is refused (two owners, one key)."""
    pairs = _entries(text, source)
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise AccessError(f"{source}: every token needs its own name; a name is repeated")
    if len({token for _, token in pairs}) != len(pairs):
        raise AccessError(f"{source}: a token is listed twice")
    return TokenSet(tuple((_digest(token), name) for name, token in pairs))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AccessError(f"token file {path} is unreadable ({error})") from None


def load_tokens(
    token_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> TokenSet:
    """The server's tokens: ``token_file`` and ``$ROBUSTLAB_FHE_TOKENS`` together."""
    environ = os.environ if environ is None else environ
    texts = [(_read(token_file), str(token_file))] if token_file is not None else []
    if environ.get(TOKENS_ENV, "").strip():
        texts.append((environ[TOKENS_ENV], f"${TOKENS_ENV}"))
    if token_file is not None and not _entries(*texts[0]):
        raise AccessError(f"token file {token_file} holds no token")
    return parse_tokens("\n".join(text for text, _ in texts), " and ".join(s for _, s in texts))


def client_token(
    token_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The token a client sends: the one in ``token_file``, else ``$ROBUSTLAB_FHE_TOKEN``."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        text, source = _read(token_file), f"token file {token_file}"
    elif environ.get(TOKEN_ENV, "").strip():
        text, source = environ[TOKEN_ENV], f"${TOKEN_ENV}"
    else:
        return None
    pairs = _entries(text, source)
    if len(pairs) != 1:
        raise AccessError(f"{source} holds {len(pairs)} tokens; a client sends exactly one")
    return pairs[0][1]


def is_loopback(host: str) -> bool:
    """Only this machine can connect: ``localhost`` or a loopback IP (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name might resolve to anything


def check_exposure(host: str, tokens: TokenSet) -> None:
    """Refuse to listen beyond this machine without tokens: anyone could use the service."""
    if not tokens.enabled and not is_loopback(host):
        raise AccessError(
            f"--host {host} is not a loopback address, so anyone who can reach it could upload "
            f"keys and run the circuit; give it tokens (--token-file FILE or ${TOKENS_ENV}), "
            f"and put it behind TLS ({SECURITY_DOC}), or listen on 127.0.0.1"
        )

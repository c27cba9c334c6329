"""API-key auth of the endpoint: bearer keys from an environment variable or a file on the Ray
nodes (never from a config file), kept as sha256 digests and compared in constant time; never logged.
Without keys, only loopback clients are answered. No Ray Serve here: the CLI checks keys before it
loads Serve."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config import ServeArgs
from orchestrator.errors import ConfigError
from orchestrator.errors import RequestError

if TYPE_CHECKING:
    from starlette.requests import Request


class ApiKeys:
    """Bearer API keys, kept as sha256 digests and compared in constant time; never logged."""

    def __init__(self, args: ServeArgs):
        self.mode = args.auth
        self.source = args.api_keys_file or f"${args.api_keys_env}"
        self.digests = [hashlib.sha256(k.encode()).digest() for k in read_api_keys(args)]
        if self.mode == "required" and not self.digests:
            raise ConfigError(f"auth is required but {self.source} holds no API keys")

    def check(self, request: Request) -> None:
        if self.mode == "none":
            return
        if not self.digests:
            if is_loopback(request.client.host if request.client else ""):
                return
            raise RequestError(401, "api_key_required",
                               f"this endpoint has no API keys, so it answers loopback clients only; "
                               f"set {self.source} on the Ray nodes")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "missing_api_key", "send the header Authorization: Bearer <API key>")
        digest = hashlib.sha256(token.strip().encode()).digest()
        valid = False
        for known in self.digests:  # no early exit: the time taken does not say which key matched
            valid |= hmac.compare_digest(known, digest)
        if not valid:
            raise RequestError(403, "invalid_api_key", "the API key is not valid")


def read_api_keys(args: ServeArgs) -> list[str]:
    if args.api_keys_file:
        try:
            text = Path(args.api_keys_file).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read api_keys_file {args.api_keys_file}: {e.strerror}") from None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [k.strip() for k in os.environ.get(args.api_keys_env, "").split(",") if k.strip()]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

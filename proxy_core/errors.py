"""One exception tree: each error knows the HTTP status the control API answers with."""

from __future__ import annotations


class WsproxyError(Exception):
    """Base of every error wsproxy reports to a user; `code` and `status` travel over the control API."""

    status = 500
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}


class ConfigError(WsproxyError):
    """A bad configuration key or flag: names the key, the bad value and what is allowed."""

    status = 400
    code = "bad_config"

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}: invalid value {value!r}; {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed


class BadRequest(WsproxyError):
    """Input that can never be valid (bad name, bad address, bad weight)."""

    status = 400
    code = "bad_request"


class NotFound(WsproxyError):
    """An unknown server or connection."""

    status = 404
    code = "not_found"


class Conflict(WsproxyError):
    """A valid request that the current state refuses (duplicate, last eligible server, live connections)."""

    status = 409
    code = "conflict"


class StateNotSaved(WsproxyError):
    """The change was made but could not be written to the state file: it would not survive a restart."""

    status = 500
    code = "state_not_saved"


class StoreUnavailable(WsproxyError):
    """A fleet change or read that needs the fleet's store (Redis), which is unreachable: named in the message."""

    status = 503
    code = "store_unavailable"

"""User-facing errors: the CLI prints their message and exits 2 (bad input, nothing started); the endpoint
answers a RequestError with its HTTP 4xx."""


class UserError(Exception):
    """Bad input that the user can fix; the message says what to change."""


class ConfigError(UserError):
    pass


class DataError(UserError):
    pass


class CheckpointError(UserError):
    pass


class StorageError(UserError):
    pass


class RequestError(Exception):
    """A request the client must change: an HTTP 4xx with a JSON body that says what was wrong."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def __reduce__(self):  # pickled whole: a DeploymentHandle's caller gets it from the replica as it was raised
        return type(self), (self.status, self.code, self.message)

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

"""User-facing errors: the CLI prints their message and exits 2 (bad input, nothing started)."""


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

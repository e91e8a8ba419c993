"""Exceptions carrying the store's own message, one class per status code of pkmstore.h."""


class PKMStoreError(Exception):
    """Any failure reported by the store; `code` is the C API's status code."""

    code = None

    def __init__(self, message, code=None):
        super().__init__(message)
        if code is not None:
            self.code = code


class ArgumentError(PKMStoreError, ValueError):
    """A bad argument: wrong shape, size, dtype or value (code PKM_ERR_ARGUMENT)."""
    code = 1


class ClosedError(PKMStoreError):
    """The store or layer was closed, or the handle is unknown (PKM_ERR_HANDLE)."""
    code = 2


class NotFoundError(PKMStoreError, FileNotFoundError):
    """No store at the path, or no such tensor (PKM_ERR_NOT_FOUND)."""
    code = 3


class CorruptStoreError(PKMStoreError):
    """Damaged store data; the message names the shard, row, tensor or record (PKM_ERR_CORRUPT)."""
    code = 4


class IncompleteStoreError(PKMStoreError):
    """The store's import has not finished; re-run it (PKM_ERR_INCOMPLETE)."""
    code = 5


class UnsupportedError(PKMStoreError):
    """A newer format version, or a store without a memory layer (PKM_ERR_UNSUPPORTED)."""
    code = 6


class StorageError(PKMStoreError, OSError):
    """The disk, the file system or LMDB failed, for example a full disk (PKM_ERR_STORAGE)."""
    code = 7


class InputFileError(PKMStoreError, ValueError):
    """A safetensors or .npy file brought to import is invalid (PKM_ERR_INPUT)."""
    code = 8


_BY_CODE = {c.code: c for c in (ArgumentError, ClosedError, NotFoundError, CorruptStoreError, IncompleteStoreError,
                                UnsupportedError, StorageError, InputFileError)}


def check(status, error):
    """Raises the exception of a failed call (status != 0) with the library's message."""
    if status != 0:
        message = error.message.decode("utf-8", "replace")
        raise _BY_CODE.get(status, PKMStoreError)(message, status)

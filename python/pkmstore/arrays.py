"""Arrays passed to the library without copies: numpy arrays as they are, torch CPU tensors
through DLPack. An array the library cannot read in place is refused, not silently copied."""
import ctypes

import numpy as np

from .errors import ArgumentError


def as_array(x, dtype, name, ndim=None):
    """`x` as a numpy array of `dtype` sharing its memory (C-contiguous), or ArgumentError."""
    if not isinstance(x, np.ndarray):
        if hasattr(x, "__dlpack__"):
            if getattr(x, "requires_grad", False):
                x = x.detach()
            if getattr(getattr(x, "device", None), "type", "cpu") != "cpu":
                raise ArgumentError(f"{name} is on {x.device}; pass a CPU tensor (x.cpu())")
            try:
                x = np.from_dlpack(x)
            except (RuntimeError, TypeError, BufferError) as e:  # a dtype numpy has not (bfloat16, say)
                raise ArgumentError(f"{name} has dtype {getattr(x, 'dtype', '?')}, which numpy cannot read in place; "
                                    f"the store needs {np.dtype(dtype).name} (convert with .to(torch.{np.dtype(dtype).name}))") from e
        elif hasattr(x, "__array__"):
            x = np.asarray(x)
        else:
            raise ArgumentError(f"{name} must be a numpy array or a CPU tensor, got {type(x).__name__}")
    if x.dtype != np.dtype(dtype):
        raise ArgumentError(f"{name} has dtype {x.dtype}, the store needs {np.dtype(dtype).name} "
                            f"(convert with .astype(numpy.{np.dtype(dtype).name}))")
    if not x.flags.c_contiguous:
        raise ArgumentError(f"{name} is not C-contiguous; pass numpy.ascontiguousarray({name}) (a copy)")
    if ndim is not None and x.ndim != ndim:
        raise ArgumentError(f"{name} has shape {tuple(x.shape)}, expected {ndim} dimensions")
    return x


def pointer(a):
    """The address of an array's first element, for the C API."""
    return ctypes.c_void_p(a.ctypes.data)


def output(shape, dtype, given, name):
    """A fresh output array, or the caller's `given` one after checking it can be written in place."""
    if given is None:
        return np.empty(shape, dtype)
    a = as_array(given, dtype, name)
    if tuple(a.shape) != tuple(shape):
        raise ArgumentError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if not a.flags.writeable:
        raise ArgumentError(f"{name} is read-only")
    return a

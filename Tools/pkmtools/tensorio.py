"""Safetensors files and bfloat16 bit patterns, with numpy only."""
import json
import struct

import numpy as np

# numpy dtypes of the safetensors names the store uses (bf16 as its uint16 bit patterns).
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "U8": "u1", "I8": "i1"}


def f32_to_bf16(a):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    """bfloat16 bit patterns (uint16 or int16) -> float32, exactly."""
    return (np.asarray(bits).view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, metadata):
    """Writes {name: (safetensors dtype, array)} and string metadata, data aligned to 8 bytes."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path, names=None):
    """{name: numpy array} of the tensors `names` (all when None), bf16 as uint16 bit patterns."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        out = {}
        for name in names if names is not None else [k for k in header if k != "__metadata__"]:
            h = header[name]
            begin, end = h["data_offsets"]
            f.seek(8 + n + begin)
            out[name] = np.frombuffer(f.read(end - begin), NUMPY_DTYPES[h["dtype"]]).reshape(h["shape"])
        return out

"""The C API of libpkmstore through ctypes: the library, its structs and its error codes."""
import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


class pkm_error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int32), ("message", ctypes.c_char * 1024)]


class pkm_layout(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_int64), ("dim", ctypes.c_int64), ("rows_per_shard", ctypes.c_int64),
                ("shard_count", ctypes.c_int64), ("rows_committed", ctypes.c_int64), ("element_type", ctypes.c_int32),
                ("codec", ctypes.c_int32), ("format_version", ctypes.c_int32), ("complete", ctypes.c_int32)]


class pkm_layer_info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("heads", "key_dim", "top_k", "cores", "output_dim", "value_dim", "physical_rows", "virtual_slots", "expansion")]


def _candidates():
    """Where the library may be: $PKMSTORE_LIBRARY, beside this package (pip install), or the
    release build of the source tree this package sits in."""
    if os.environ.get("PKMSTORE_LIBRARY"):
        yield os.environ["PKMSTORE_LIBRARY"]
    yield os.path.join(_HERE, "libpkmstore.so")
    yield os.path.join(_HERE, "..", "..", ".build", "release", "libpkmstore.so")


def _fast_blas_kernels():
    """OpenBLAS picks its kernels by CPU model when the library loads, and 0.3.21 (Debian 12)
    falls back to its SSE3 ones on recent Intel models it does not know (an Emerald Rapids Xeon);
    the search's matrix products then run at about half speed. On an Intel CPU, the kernels
    OpenBLAS uses for every model it knows with the same instructions: SkylakeX with AVX-512 (F,
    CD, BW, DQ, VL), Haswell with AVX2 and FMA; None otherwise (memtool asks the same of
    pkm_blas_core_for_cpu)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read(1 << 16)
    except OSError:
        return None
    flags = set()
    for line in info.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "GenuineIntel" not in info:
        return None
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


#: The OpenBLAS kernels this module named while loading the library (None: it named none, the
#: user having chosen through OPENBLAS_CORETYPE or the CPU not needing it).
blas_kernels_asked = None


def _load():
    global blas_kernels_asked
    tried = []
    for path in _candidates():
        if os.path.exists(path):
            # OpenBLAS reads the variable as it loads; it is taken back after, so that processes
            # this one starts choose for themselves.
            if "OPENBLAS_CORETYPE" not in os.environ:
                blas_kernels_asked = _fast_blas_kernels()
            if blas_kernels_asked:
                os.environ["OPENBLAS_CORETYPE"] = blas_kernels_asked
            try:
                return ctypes.CDLL(os.path.abspath(path))
            finally:
                if blas_kernels_asked:
                    del os.environ["OPENBLAS_CORETYPE"]
        tried.append(path)
    raise ImportError("libpkmstore.so not found (looked at " + ", ".join(tried) + "); build it with "
                      "`swift build -c release --product pkmstore` in the repository, reinstall with "
                      "`pip install ./python`, or set PKMSTORE_LIBRARY to its path")


lib = _load()

_i64p = ctypes.POINTER(ctypes.c_int64)
_f32p = ctypes.POINTER(ctypes.c_float)
_err = ctypes.POINTER(pkm_error)
_u64p = ctypes.POINTER(ctypes.c_uint64)
_size = ctypes.c_size_t
_sizep = ctypes.POINTER(ctypes.c_size_t)
_str = ctypes.c_char_p

for name, args in {
    "pkm_store_open": [_str, _size, _u64p, _err],
    "pkm_store_open_with": [_str, _size, ctypes.c_uint32, _u64p, _err],
    "pkm_store_close": [ctypes.c_uint64, _err],
    "pkm_store_wait_checked": [ctypes.c_uint64, ctypes.c_double, ctypes.POINTER(ctypes.c_int32), _err],
    "pkm_store_layout": [ctypes.c_uint64, ctypes.POINTER(pkm_layout), _err],
    "pkm_store_rows": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, _err],
    "pkm_store_gather_reduce": [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, _size, _size, ctypes.c_void_p, _size,
                                ctypes.c_void_p, _err],
    "pkm_store_gate_scores": [ctypes.c_uint64, ctypes.c_void_p, _size, _size, _size, ctypes.c_void_p, _size, ctypes.c_void_p,
                              _str, ctypes.c_void_p, _err],
    "pkm_store_tensor_names": [ctypes.c_uint64, ctypes.c_char_p, _size, _sizep, _err],
    "pkm_store_layer_names": [ctypes.c_uint64, ctypes.c_char_p, _size, _sizep, _err],
    "pkm_store_tensor_info": [ctypes.c_uint64, _str, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int32),
                              _i64p, _sizep, _err],
    "pkm_store_tensor_read": [ctypes.c_uint64, _str, ctypes.c_void_p, _size, _err],
    "pkm_store_verify": [ctypes.c_uint64, _i64p, ctypes.c_char_p, _size, _err],
    "pkm_layer_open": [_str, ctypes.c_int32, _size, _u64p, _err],
    "pkm_layer_open_named": [_str, _str, ctypes.c_int32, _size, _u64p, _err],
    "pkm_store_layer_open": [ctypes.c_uint64, _str, ctypes.c_int32, _u64p, _err],
    "pkm_layer_close": [ctypes.c_uint64, _err],
    "pkm_layer_describe": [ctypes.c_uint64, ctypes.POINTER(pkm_layer_info), _err],
    "pkm_layer_config_json": [ctypes.c_uint64, ctypes.c_char_p, _size, _sizep, _err],
    "pkm_layer_search": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, ctypes.c_void_p, _err],
    "pkm_layer_lookup": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, _err],
    "pkm_layer_lookup_gated": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_void_p, _err],
    "pkm_import": [_str, _str, _str, _err],
    "pkm_export": [_str, _str, _err],
    "pkm_export_layer": [_str, _str, _str, _err],
    "pkm_split": [_str, _str, _size, _str, _err],
    "pkm_store_part_json": [ctypes.c_uint64, ctypes.c_char_p, _size, _sizep, _err],
    "pkm_layer_address": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, ctypes.c_void_p, _err],
    "pkm_layer_project": [ctypes.c_uint64, ctypes.c_void_p, _size, ctypes.c_void_p, _err],
}.items():
    function = getattr(lib, name)
    function.argtypes = args
    function.restype = ctypes.c_int
lib.pkm_version.argtypes = []
lib.pkm_version.restype = ctypes.c_char_p

# Status codes of pkmstore.h.
OK, ARGUMENT, HANDLE, NOT_FOUND, CORRUPT, INCOMPLETE, UNSUPPORTED, STORAGE, INPUT, BUFFER = range(10)
# Element type codes of Spec/FORMAT.md, as numpy dtypes (bf16 as its uint16 bit patterns).
NUMPY_DTYPES = {1: "<f4", 2: "<f2", 3: "<u2", 4: "<i8", 5: "<i4", 6: "u1", 7: "i1"}
TYPE_NAMES = {1: "f32", 2: "f16", 3: "bf16", 4: "i64", 5: "i32", 6: "u8", 7: "i8"}

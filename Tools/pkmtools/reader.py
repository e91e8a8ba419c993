"""An independent reader of the store format, written from Spec/FORMAT.md alone (the
command line is Tools/pkmstore_reader.py).

    pkmstore_reader.py STORE --summary          print the manifest and check every shard
    pkmstore_reader.py STORE --dump OUT.bin     write all rows' stored bytes to OUT.bin
    pkmstore_reader.py STORE --floats OUT.npy   write all rows as float32 .npy
    pkmstore_reader.py STORE --digest           print a SHA-256 of the rows, tensors and retrieval records
    pkmstore_reader.py STORE --layers           print each memory layer's name and retrieval record

Needs the PyPI packages lmdb, zstandard, xxhash and numpy (Tools/bootstrap.sh installs them).
"""
import argparse
import hashlib
import json
import re
import struct
import sys

import lmdb
import numpy as np
import xxhash
import zstandard

from .tensorio import bf16_to_f32

ELEMENT = {1: ("f32", 4), 2: ("f16", 2), 3: ("bf16", 2)}
TENSOR_DTYPES = {1: ("F32", "<f4"), 2: ("F16", "<f2"), 3: ("BF16", "<u2"), 4: ("I64", "<i8"),
                 5: ("I32", "<i4"), 6: ("U8", "u1"), 7: ("I8", "i1")}


class FormatError(Exception):
    pass


LAYER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def read_tensor(record, name, version):
    if len(record) < 16 or record[:4] != b"PKT1":
        raise FormatError(f"tensor {name}: bad header")
    dtype, rank = record[4], record[5]
    (checksum,) = struct.unpack_from("<Q", record, 8)
    shape = struct.unpack_from(f"<{rank}Q", record, 16)
    data = record[16 + 8 * rank:]
    seed = 0
    if version >= 3:  # the name, the first 8 header bytes and the extents seed the data's checksum
        seed = xxhash.xxh64_intdigest(name.encode() + bytes(record[:8]) + bytes(record[16:16 + 8 * rank]))
    if xxhash.xxh64_intdigest(data, seed=seed) != checksum:
        raise FormatError(f"tensor {name}: checksum mismatch")
    return np.frombuffer(data, dtype=TENSOR_DTYPES[dtype][1]).reshape(shape)


def unplane(planes, size):
    """Inverse of the byte-plane transform: planes is a (size, M) uint8 array."""
    if size == 2:
        r = (planes[0].astype(np.uint16) << 8) | planes[1].astype(np.uint16)
        return ((r >> 1) | (r << 15)).astype("<u2")
    r = np.zeros(planes.shape[1], dtype=np.uint32)
    for p in range(4):
        r |= planes[p].astype(np.uint32) << np.uint32(8 * (3 - p))
    return ((r >> 1) | (r << 31)).astype("<u4")


# The format versions whose stores hold blobs of each codec.
CODEC_VERSIONS = {0: range(1, 3), 1: range(1, 8), 2: range(3, 5), 3: range(5, 8), 4: range(6, 7), 5: range(7, 8)}


def checked_raw_layout(codec, row_bytes):
    """(start, group rows, group bytes, rows offset, checksums offset) of a raw blob with row checksums."""
    if codec == 2:  # each row followed by its checksum
        return 32, 1, row_bytes + 8, 0, row_bytes
    g = 8  # codec 3: groups within 4 KiB, a power of two up to 8, a checksum line before each
    while g > 1 and g * row_bytes > 4096:
        g //= 2
    line = (8 * g + 63) // 64 * 64
    return 48, g, line + g * row_bytes, line, 0


def checksum_lines(rows):
    """Bytes of the 64-byte lines holding `rows` u32 checksums."""
    return (4 * rows + 63) // 64 * 64


def nibble_layout(dim, size, codec):
    """(slot bytes, unit rows, unit bytes, checksum bytes before a unit's slots) of codec 4 (groups
    within 4 KiB, a power of two up to 16) or 5 (units of a 4 KiB page: Spec/FORMAT.md, "Nibble")."""
    slot = (dim + 1) // 2 + (size - 1) * dim
    if codec == 4:
        g = 16
        while g > 1 and g * slot > 4096:
            g //= 2
        return slot, g, 64 + g * slot, 64
    fit = 0
    while checksum_lines(fit + 1) + (fit + 1) * slot <= 4032:
        fit += 1
    if fit >= 8:
        n = fit - fit % 8
        return slot, n, 4096, checksum_lines(n)
    if fit >= 1:
        return slot, fit, 4096, checksum_lines(fit)
    return slot, 1, 4096 * ((128 + slot + 4095) // 4096), 64


def decode_nibble(blob, index, start, rows, dim, size, codes, codec):
    """The rows of a codec-4 or codec-5 blob (Spec/FORMAT.md, "Nibble"), each checked against its u32 checksum."""
    row_bytes = dim * size
    slot, g, group, lines = nibble_layout(dim, size, codec)
    full, rest = divmod(rows, g)
    groups_end = 48 + full * group + (lines + rest * slot if rest else 0)
    extra = len(blob) - groups_end
    if extra < 0 or extra % row_bytes or extra // row_bytes > rows:
        raise FormatError(f"shard {index}: bad nibble length")
    escapes = extra // row_bytes
    if any(blob[32:48]):
        raise FormatError(f"shard {index}: header padding is not zero")
    if codes is None:
        raise FormatError(f"shard {index}: a nibble shard, and the store holds no __nibble_codes")
    lookup = np.array(list(codes), dtype=np.uint8)
    parts, escaped = [], 0
    for r in range(rows):
        line = 48 + (r // g) * group
        at = line + lines + (r % g) * slot
        s = bytes(blob[at:at + slot])
        if s[0] == 0xFF:  # escaped: marker, 3 zero bytes, u32 index, zeros; stored whole after the groups, in row order
            (i,) = struct.unpack_from("<I", s, 4)
            if any(s[1:4]) or any(s[8:]) or i != escaped or i >= escapes:
                raise FormatError(f"shard {index}: row {start + r} has a bad escape slot")
            row = bytes(blob[groups_end + i * row_bytes:groups_end + (i + 1) * row_bytes])
            escaped += 1
        else:
            n = np.frombuffer(s[:(dim + 1) // 2], dtype=np.uint8)
            code = np.empty(2 * len(n), dtype=np.uint8)
            code[0::2], code[1::2] = n & 15, n >> 4
            code = code[:dim]
            if (code == 15).any():
                raise FormatError(f"shard {index}: row {start + r} holds code 15")
            out = np.empty((dim, size), dtype=np.uint8)
            out[:, :size - 1] = np.frombuffer(s[(dim + 1) // 2:], dtype=np.uint8).reshape(dim, size - 1)
            out[:, size - 1] = lookup[code]
            row = out.tobytes()
        (row_sum,) = struct.unpack_from("<I", blob, line + 4 * (r % g))
        if xxhash.xxh64_intdigest(row, seed=start + r) & 0xFFFFFFFF != row_sum:
            raise FormatError(f"shard {index}: row {start + r} checksum mismatch")
        parts.append(row)
    if escaped != escapes:
        raise FormatError(f"shard {index}: escaped rows no slot points to")
    for first in range(0, rows, g):
        line, n = 48 + (first // g) * group, min(g, rows - first)
        if any(blob[line + 4 * n:line + lines]):
            raise FormatError(f"shard {index}: checksum line of row {start + first} is not zero-padded")
        if n == g and any(blob[line + lines + n * slot:line + group]):  # codec 5: a whole unit's padding to its page's end
            raise FormatError(f"shard {index}: the unit of row {start + first} is not zero-padded")
    return b"".join(parts)


def decode_shard(blob, index, table, dictionary, version, codes=None):
    type_code = {"f32": 1, "f16": 2, "bf16": 3}[table["elementType"]]
    size = ELEMENT[type_code][1]
    start = index * table["rowsPerShard"]
    rows = min(table["rows"], start + table["rowsPerShard"]) - start
    if len(blob) < 32 or blob[:4] != b"PKS1":
        raise FormatError(f"shard {index}: bad magic")
    codec, etype, planes, flags = blob[4], blob[5], blob[6], blob[7]
    row_count, dim, shard_no, checksum = struct.unpack_from("<IIQQ", blob, 8)
    if etype != type_code or row_count != rows or dim != table["dim"] or shard_no != index:
        raise FormatError(f"shard {index}: header disagrees with the manifest")
    m = rows * dim
    if codec in CODEC_VERSIONS and version not in CODEC_VERSIONS[codec]:
        raise FormatError(f"shard {index}: codec {codec} in a store of version {version}")
    if codec == 0:
        if planes != 0 or len(blob) != 32 + m * size:
            raise FormatError(f"shard {index}: bad raw length")
        data = bytes(blob[32:])
    elif codec in (2, 3):  # rows with their XXH64s, seeded with the row's index in the table
        row_bytes = dim * size
        begin, g, group, rows_at, sums_at = checked_raw_layout(codec, row_bytes)
        full, rest = divmod(rows, g)
        length = begin + full * group + (group - (g - rest) * row_bytes if rest else 0)
        if planes != 0 or len(blob) != length:
            raise FormatError(f"shard {index}: bad raw length")
        if any(blob[32:begin]):
            raise FormatError(f"shard {index}: header padding is not zero")
        parts = []
        for r in range(rows):
            at = begin + (r // g) * group + rows_at + (r % g) * row_bytes
            row = bytes(blob[at:at + row_bytes])
            (row_sum,) = struct.unpack_from("<Q", blob, begin + (r // g) * group + sums_at + (r % g) * 8)
            if xxhash.xxh64_intdigest(row, seed=start + r) != row_sum:
                raise FormatError(f"shard {index}: row {start + r} checksum mismatch")
            parts.append(row)
        if codec == 3:
            for first in range(0, rows, g):
                line = begin + (first // g) * group
                if any(blob[line + 8 * min(g, rows - first):line + rows_at]):
                    raise FormatError(f"shard {index}: checksum line of row {start + first} is not zero-padded")
        data = b"".join(parts)
    elif codec in (4, 5):
        if planes != 0 or flags != 0 or table["codec"] != "nibble":
            raise FormatError(f"shard {index}: bad nibble header")
        data = decode_nibble(blob, index, start, rows, dim, size, codes, codec)
    elif codec == 1:
        if planes != size:
            raise FormatError(f"shard {index}: bad plane count")
        offset = 32 + 8 * planes
        out = np.empty((planes, m), dtype=np.uint8)
        dctx = zstandard.ZstdDecompressor(dict_data=dictionary if flags & 1 else None)
        for p in range(planes):
            mode = blob[32 + 8 * p]
            (length,) = struct.unpack_from("<I", blob, 32 + 8 * p + 4)
            payload = bytes(blob[offset:offset + length])
            if len(payload) != length:
                raise FormatError(f"shard {index}: plane {p} runs past the blob")
            if mode == 0:
                plane = payload
            elif mode == 1:
                plane = dctx.decompress(payload, max_output_size=m)
            else:
                raise FormatError(f"shard {index}: unknown plane mode {mode}")
            if len(plane) != m:
                raise FormatError(f"shard {index}: plane {p} has {len(plane)} bytes, expected {m}")
            out[p] = np.frombuffer(plane, dtype=np.uint8)
            offset += length
        if offset != len(blob):
            raise FormatError(f"shard {index}: trailing bytes")
        data = unplane(out, size).tobytes()
    else:
        raise FormatError(f"shard {index}: unknown codec {codec}")
    if xxhash.xxh64_intdigest(data) != checksum:
        raise FormatError(f"shard {index}: checksum mismatch")
    return data


def unseal(value, key, version):
    """The JSON of a meta record sealed as `version` seals it (seed: XXH64 of the key from
    version 3, 0 in version 2), or None when the seal does not match."""
    if len(value) < 8:
        return None
    body, (seal,) = value[:-8], struct.unpack_from("<Q", value, len(value) - 8)
    seed = xxhash.xxh64_intdigest(key.encode()) if version >= 3 else 0
    return body if xxhash.xxh64_intdigest(body, seed=seed) == seal else None


def read_manifest(value):
    for version in (3, 2):
        body = unseal(value, "manifest", version)
        if body is not None:
            manifest = json.loads(body)
            stated = manifest.get("formatVersion")
            # Version 3's seal is every later version's too.
            if not (stated == version or (version == 3 and isinstance(stated, int) and stated > 3)):
                raise FormatError("meta record manifest: checksum mismatch")
            return manifest
    try:
        manifest = json.loads(value)  # version 1 stores hold bare JSON
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("formatVersion") != 1:
        raise FormatError("meta record manifest: checksum mismatch")
    return manifest


class StoreReader:
    def __init__(self, path):
        self.env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=4)
        self.meta = self.env.open_db(b"meta", create=False)
        self.tensors_db = self.env.open_db(b"tensors", create=False)
        self.shards = self.env.open_db(b"shards", create=False)
        with self.env.begin() as txn:
            manifest = txn.get(b"manifest", db=self.meta)
            if manifest is None:
                raise FormatError("no manifest")
            self.manifest = read_manifest(manifest)
            if self.manifest.get("format") != "pkm-store" or self.manifest.get("formatVersion") not in (1, 2, 3, 4, 5, 6, 7):
                raise FormatError("not a pkm-store of version 1 to 6")
            self.state = json.loads(self.record(txn, "state"))
            # From version 3 the catalog lists every tensor (with its checksum) and meta record.
            self.catalog = None
            if self.manifest["formatVersion"] >= 3:
                catalog = self.record(txn, "catalog")
                if catalog is None:
                    raise FormatError("meta record catalog is missing")
                self.catalog = json.loads(catalog)
        self.table = self.manifest["table"]
        self.dictionary = None
        if self.table["dictionary"]:
            d = self.tensor("__zstd_dictionary")
            self.dictionary = zstandard.ZstdCompressionDict(d.tobytes())
        self.codes = None
        if self.table["codec"] == "nibble" and self.shard_count() > 0:
            self.codes = self.tensor("__nibble_codes").tobytes()
            if len(self.codes) != 15 or len(set(self.codes)) != 15:
                raise FormatError("tensor __nibble_codes: not 15 distinct bytes")

    def record(self, txn, name):
        """The JSON of meta record `name` (None when absent), its seal checked from version 2."""
        value = txn.get(name.encode(), db=self.meta)
        if value is None and getattr(self, "catalog", None) and name in self.catalog["records"]:
            raise FormatError(f"meta record {name}: the catalog lists it, but it is missing")
        if value is None or self.manifest["formatVersion"] < 2:
            return value
        body = unseal(value, name, self.manifest["formatVersion"])
        if body is None:
            raise FormatError(f"meta record {name}: checksum mismatch")
        return body

    def layers(self):
        """{name: retrieval record JSON bytes} of every memory layer (Spec/FORMAT.md, "Layers"), in name order."""
        with self.env.begin() as txn:
            if self.manifest["formatVersion"] < 4:
                record = self.record(txn, "retrieval")
                return {} if record is None else {"default": record}
            names = []
            for key in self.catalog["records"]:
                if key.startswith("layers/") and key.endswith("/retrieval"):
                    name = key[len("layers/"):-len("/retrieval")]
                    if LAYER_NAME.fullmatch(name):
                        names.append(name)
            return {n: self.record(txn, f"layers/{n}/retrieval") for n in sorted(names, key=lambda n: n.encode())}

    def digest(self):
        """SHA-256 over every row, every tensor (by name) and the layers' retrieval records: equal digests, equal content."""
        h = hashlib.sha256()
        for s in range(self.shard_count()):
            h.update(self.shard_bytes(s))
        for name in sorted(self.tensor_names(), key=lambda n: n.encode()):
            if name != "__nibble_codes":  # how the rows are coded, not what they hold
                h.update(name.encode() + self.tensor(name).tobytes())
        if self.manifest["formatVersion"] < 4:
            with self.env.begin() as txn:
                h.update(self.record(txn, "retrieval") or b"")
        else:
            for name, record in self.layers().items():
                h.update(name.encode() + record)
        return h.hexdigest()

    def tensor(self, name):
        with self.env.begin() as txn:
            record = txn.get(name.encode(), db=self.tensors_db)
        if record is None:
            raise FormatError(f"tensor {name} is missing")
        if self.catalog is not None and struct.unpack_from("<Q", record, 8)[0] != self.catalog["tensors"].get(name):
            raise FormatError(f"tensor {name}: not the record the catalog lists")
        return read_tensor(record, name, self.manifest["formatVersion"])

    def tensor_names(self):
        if self.catalog is not None:
            return sorted(self.catalog["tensors"], key=lambda n: n.encode())
        with self.env.begin() as txn:
            return [k.decode() for k, _ in txn.cursor(db=self.tensors_db)]

    def shard_count(self):
        rows = self.table["rows"] if self.state["complete"] else self.state["rowsCommitted"]
        return -(-rows // self.table["rowsPerShard"])

    def shard_bytes(self, index):
        with self.env.begin() as txn:
            blob = txn.get(struct.pack(">Q", index), db=self.shards)
            if blob is None:
                raise FormatError(f"shard {index} is missing")
            return decode_shard(blob, index, self.table, self.dictionary, self.manifest["formatVersion"], self.codes)

    def all_bytes(self):
        return b"".join(self.shard_bytes(s) for s in range(self.shard_count()))

    def all_floats(self):
        raw = self.all_bytes()
        t = self.table["elementType"]
        if t == "f32":
            a = np.frombuffer(raw, dtype="<f4")
        elif t == "f16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            a = bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
        return a.reshape(-1, self.table["dim"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--dump")
    ap.add_argument("--floats")
    ap.add_argument("--digest", action="store_true")
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args()
    try:
        r = StoreReader(args.store)
        if args.dump:
            with open(args.dump, "wb") as f:
                f.write(r.all_bytes())
        if args.floats:
            np.save(args.floats, r.all_floats())
        if args.digest:
            print(r.digest(), "complete" if r.state["complete"] else f"incomplete {r.state['rowsCommitted']}")
        if args.layers:
            for name, record in r.layers().items():
                print(name, record.decode())
        if args.summary or not (args.dump or args.floats or args.digest or args.layers):
            values = r.all_floats()
            t = r.table
            print(f"python reader: {values.shape[0]} rows x {values.shape[1]} {t['elementType']}, codec {t['codec']}, "
                  f"{r.shard_count()} shards checked, complete={r.state['complete']}, "
                  f"mean {values.mean():.6f} std {values.std():.6f}, tensors {r.tensor_names()}")
    except (FormatError, lmdb.Error, zstandard.ZstdError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


#!/usr/bin/env python3
"""An independent reader of the store format, written from Spec/FORMAT.md alone.

    pkmstore_reader.py STORE --summary          print the manifest and check every shard
    pkmstore_reader.py STORE --dump OUT.bin     write all rows' stored bytes to OUT.bin
    pkmstore_reader.py STORE --floats OUT.npy   write all rows as float32 .npy
    pkmstore_reader.py STORE --digest           print a SHA-256 of the rows, tensors and retrieval record

The reader itself is Tools/pkmtools/reader.py (import it as pkmtools.reader). Needs the PyPI
packages lmdb, zstandard, xxhash and numpy (Tools/bootstrap.sh installs them).
"""
from pkmtools.reader import main

if __name__ == "__main__":
    main()

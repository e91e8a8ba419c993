"""Python helpers of the repository's tools: tensor files and 16-bit floats (tensorio), and the
independent store reader written from Spec/FORMAT.md (reader).

Scripts in Tools/ import it directly (their directory is on sys.path); scripts elsewhere run
with PYTHONPATH=Tools, which Tools/prelude.sh sets.
"""

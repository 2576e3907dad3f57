"""The lake's error: a problem with the lake that the user must fix (lake/store.py re-exports it)."""


class LakeError(Exception):
    """A problem with the lake on disk or on its store that the user must fix; the message says how."""

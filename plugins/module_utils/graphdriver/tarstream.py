"""Layer tar reading and writing (skeleton; filled in shortly)."""

from .errors import ArchiveError  # noqa: F401


def iter_entries(stream):
    raise NotImplementedError

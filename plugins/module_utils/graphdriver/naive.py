"""NaiveDiffDriver: diff/changes/apply_diff/diff_size over get/put (skeleton)."""

from .driver import Driver


class NaiveDiffDriver(Driver):
    pass

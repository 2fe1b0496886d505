"""strata.graphdriver: Docker's storage graphdrivers in standard-library Python.

The public API (see DESIGN.md) is what this package exports; everything else
is internal.
"""

from .driver import Change, Driver, check_support, new, registered
from .errors import (ArchiveError, BreakoutError, CommandError, GraphDriverError,
                     IncompatibleFS, LayerExists, LayerNotFound, NotSupported,
                     PrerequisitesMissing, QuotaError)
from .priority import priority

__all__ = [
    "new", "check_support", "registered", "priority", "Change", "Driver",
    "GraphDriverError", "NotSupported", "LayerNotFound", "LayerExists",
    "ArchiveError", "BreakoutError", "CommandError", "IncompatibleFS",
    "PrerequisitesMissing", "QuotaError",
]

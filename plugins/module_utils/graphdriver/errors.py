"""The errors of the graphdriver API.

Docker tells "not supported", "prerequisites" and "incompatible fs" apart but
treats all three alike when it picks a driver: the driver is skipped. Every
other error is fatal. ``NotSupported`` carries that meaning here, with a
``reason`` a person can act on.
"""


class GraphDriverError(Exception):
    """Base of every error the library raises; no bare OSError escapes."""


class NotSupported(GraphDriverError):
    """This driver cannot run here (missing tool, wrong backing fs, kernel)."""

    def __init__(self, driver, reason):
        super().__init__("%s: not supported: %s" % (driver, reason))
        self.driver = driver
        self.reason = reason


class PrerequisitesMissing(NotSupported):
    """A tool, kernel module or device the driver needs is absent."""


class IncompatibleFS(NotSupported):
    """The driver home is on a filesystem the driver cannot use."""


class LayerNotFound(GraphDriverError):
    def __init__(self, layer_id, detail=""):
        msg = "layer %s does not exist" % layer_id
        super().__init__(msg + (": " + detail if detail else ""))
        self.layer_id = layer_id


class LayerExists(GraphDriverError):
    def __init__(self, layer_id):
        super().__init__("layer %s already exists" % layer_id)
        self.layer_id = layer_id


class ArchiveError(GraphDriverError):
    """A layer tar is malformed, truncated or hostile; names the entry."""

    def __init__(self, message, entry=None):
        if entry is not None:
            message = "%s (tar entry %r)" % (message, entry)
        super().__init__(message)
        self.entry = entry


class BreakoutError(ArchiveError):
    """A tar entry would write outside the layer root."""


class QuotaError(GraphDriverError):
    """A size quota was asked for where the driver cannot enforce one."""


class CommandError(GraphDriverError):
    """An external tool (btrfs, zfs, lvm, mkfs …) failed."""

    def __init__(self, argv, returncode, stderr):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__("%s failed (exit %s): %s" % (
            " ".join(self.argv), returncode, stderr.strip() or "no output"))

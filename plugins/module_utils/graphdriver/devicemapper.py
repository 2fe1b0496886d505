"""The devicemapper driver (moby v20.10–v24 daemon/graphdriver/devmapper).

Every layer is a thin device in one device-mapper thin pool; a child layer
is a ``create_snap`` of its parent. Layout, as Docker writes it::

    <home>/                          0700
    <home>/devicemapper/data         loop-lvm only: sparse data file
    <home>/devicemapper/metadata     loop-lvm only: sparse pool metadata file
    <home>/metadata/base             JSON of the base device (hash "")
    <home>/metadata/<id>             JSON {device_id, size, transaction_id,
                                           initialized, deleted}
    <home>/metadata/deviceset-metadata    {next_device_id, BaseDeviceUUID,
                                           BaseDeviceFilesystem}
    <home>/metadata/transaction-metadata  {open_transaction_id, device_hash,
                                           device_id}
    <home>/mnt/<id>/                 mountpoint of the layer's thin device
    <home>/mnt/<id>/rootfs           what Get returns
    <home>/mnt/<id>/id               the layer id (Docker writes it on Get)

Device-mapper names are ``docker-<maj>:<min>-<inode>-<hash>`` where maj:min
and inode are those of the home directory, the pool is ``…-pool`` and the
base device ``…-base``. Every change to the pool is a transaction as in
Docker: transaction-metadata is written first, then the pool is changed, then
the device's metadata, then the pool's transaction id is moved on; a start
that finds the pool's id behind the open one rolls the device back.

Deferred removal and deletion (``dm.use_deferred_removal``,
``dm.use_deferred_deletion``), as Docker keeps them: a device still open
somewhere (a mount leaked into another mount namespace) is removed with
``dmsetup remove --deferred``, which the kernel completes at the last close,
and a get cancels a pending removal. A layer whose thin device the pool
cannot delete yet (EBUSY) is marked ``"deleted": true`` in metadata/<hash>:
it no longer exists for the API, its device id stays taken, and its deletion
is tried again. Docker retries from a worker every 30 s; without a daemon
we retry when the driver opens and after every remove.

Read-only (a migration source, a data-root check), nothing reaches the
loop files: they are attached read-only, the pool made from them has the
thin-pool ``read_only`` feature (no metadata commit), the thin devices
are read-only tables, and the mount skips journal replay (xfs
``norecovery``, ext4 ``noload``); an xfs mounted ro without it wrote to
its device. Docker has no such mode (its AttachLoopDevice opens both files
read-write).
"""

import contextlib
import errno
import fcntl
import glob
import json
import os
import struct
import tempfile
import time

from .command import Command, require_tool
from .driver import check_id, register
from .errors import (CommandError, GraphDriverError, LayerExists, LayerNotFound,
                     PrerequisitesMissing, QuotaError)
from .fileutil import atomic_write, locked, makedirs, mkdir
from .mount import MS_RDONLY, is_mountpoint, mount, unmount
from .naive import NaiveDiffDriver
from .projectquota import parse_size
from . import refcount
from .refcount import RefCounter

GiB = 1 << 30
# deviceset.go defaults
DEFAULT_DATA_LOOPBACK_SIZE = 100 * GiB
DEFAULT_METADATA_LOOPBACK_SIZE = 2 * GiB
DEFAULT_BASE_FS_SIZE = 10 * GiB
DEFAULT_THIN_BLOCK_SIZE = 128          # 512-byte sectors: 64K
DEFAULT_MIN_FREE_SPACE_PERCENT = 10
# The thin-pool target addresses devices with 24 bits.
MAX_DEVICE_ID = 0xffffff
# Low water mark Docker gives the pool table (in data blocks).
LOW_WATER_MARK = 32768
# The kernel's dm ioctl version from which deferred removal exists
# (deviceset.go: "Kernel driver version >= 4.27.0 support deferred removal").
DEFERRED_REMOVAL_SINCE = (4, 27, 0)
SECTOR = 512

DEVICE_SET_META_FILE = "deviceset-metadata"
TRANSACTION_META_FILE = "transaction-metadata"

# <linux/loop.h>: Docker attaches its loop files itself with autoclear, so
# that they vanish as soon as the pool stops using them.
LOOP_CTL_GET_FREE = 0x4C82
LOOP_SET_FD = 0x4C00
LOOP_SET_STATUS64 = 0x4C04
LO_FLAGS_AUTOCLEAR = 4
_LOOP_INFO64 = "=5Q4I64s64s32s2Q"

DMSETUP = "dmsetup"


def _dmsetup(*args):
    return Command(DMSETUP, *args).run()


def kernel_support_problem():
    """None if the kernel has device-mapper thin pools, else why not."""
    if not os.path.isdir("/sys/module/dm_thin_pool"):
        try:
            Command("modprobe", "dm_thin_pool").run()
        except CommandError as e:
            return ("the kernel has no device-mapper thin-pool support "
                    "(/sys/module/dm_thin_pool absent and modprobe dm_thin_pool failed: %s)"
                    % e.stderr.strip())
    try:
        targets = _dmsetup("targets")
    except CommandError as e:
        return "device-mapper is not usable here (dmsetup targets: %s)" % e.stderr.strip()
    if not any(line.split()[:1] == ["thin-pool"] for line in targets.splitlines()):
        return "the kernel's device-mapper has no thin-pool target (dmsetup targets)"
    return None


def deferred_removal_problem():
    """None if the kernel's device-mapper can remove a device deferred."""
    try:
        out = _dmsetup("version")
    except CommandError as e:
        return "dmsetup version: %s" % e.stderr.strip()
    for line in out.splitlines():
        if line.startswith("Driver version:"):
            try:
                version = tuple(int(x) for x in line.split(":", 1)[1].strip().split("."))
            except ValueError:
                break
            if version >= DEFERRED_REMOVAL_SINCE:
                return None
            return "kernel device-mapper driver %s is older than 4.27.0" % ".".join(map(str, version))
    return "the kernel's device-mapper driver version is unknown (dmsetup version: %r)" % out


def _parse_bool(key, value):
    """Go's strconv.ParseBool, which Docker parses these options with."""
    text = str(value)
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise GraphDriverError("devmapper: invalid value %r for option %s: want true or false" % (value, key))


def attach_loop(path, read_only=False):
    """Attach ``path`` to a free loop device with autoclear; return the open
    device file (closing it after the pool took the device lets autoclear
    detach it when the pool goes away) and its name. ``read_only``: the
    file is opened read-only, so the kernel makes the loop device read-only
    (as ``losetup -r``) and no write reaches the file (Docker's
    AttachLoopDevice opens both read-write: it has no read-only mode)."""
    mode = os.O_RDONLY if read_only else os.O_RDWR
    ctl = os.open("/dev/loop-control", os.O_RDWR)
    try:
        for attempt in range(16):   # pylint: disable=unused-variable
            index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            name = "/dev/loop%d" % index
            loop_fd = os.open(name, mode)
            file_fd = os.open(path, mode)
            try:
                fcntl.ioctl(loop_fd, LOOP_SET_FD, file_fd)
            except OSError as e:
                os.close(loop_fd)
                if e.errno == errno.EBUSY:   # raced with another user
                    continue
                raise
            finally:
                os.close(file_fd)
            info = struct.pack(_LOOP_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR,
                               os.fsencode(path)[:63], b"", b"", 0, 0)
            fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, info)
            return loop_fd, name
        raise GraphDriverError("devicemapper: no free loop device for %s" % path)
    finally:
        os.close(ctl)


class DevInfo(object):
    """One thin device: Docker's devInfo, saved as metadata/<hash>."""

    def __init__(self, hash, device_id, size, transaction_id, initialized=False,
                 deleted=False):
        self.hash = hash
        self.device_id = device_id
        self.size = size
        self.transaction_id = transaction_id
        self.initialized = initialized
        self.deleted = deleted

    def to_json(self):
        # Field order as encoding/json writes Docker's struct.
        return json.dumps({"device_id": self.device_id, "size": self.size,
                           "transaction_id": self.transaction_id,
                           "initialized": self.initialized, "deleted": self.deleted},
                          separators=(",", ":"))


@register
class DeviceMapperDriver(NaiveDiffDriver):
    name = "devicemapper"

    @classmethod
    def option_prefix(cls):
        return "dm."    # dm.thinpooldev, dm.basesize: Docker's one exception

    def __init__(self, home, options=None, read_only=False):
        super().__init__(home, options, read_only)
        self._parse_options()
        require_tool(self.name, DMSETUP)
        problem = kernel_support_problem()
        if problem:
            raise PrerequisitesMissing(self.name, problem)
        if self.deferred_remove:
            problem = deferred_removal_problem()
            if problem:
                raise GraphDriverError("devmapper: Deferred removal can not be enabled as kernel does "
                                       "not support it (%s)" % problem)
        self._refs = RefCounter(self.name, self.home)
        self._own_pool = False
        if read_only:
            self._check_pool_exists()
            self._open_read_only()
            return
        parent = os.path.dirname(self.home)
        if not os.path.isdir(parent):
            makedirs(parent, 0o755)
        mkdir(self.home, 0o700)
        mkdir(self.metadata_dir, 0o700)
        mkdir(os.path.join(self.home, "mnt"), 0o700)
        st = os.stat(self.home)
        self.device_prefix = "docker-%d:%d-%d" % (os.major(st.st_dev), os.minor(st.st_dev),
                                                  st.st_ino)
        makedirs(self._refs.dir, 0o700)
        self.transaction_id = 0
        self.open_transaction_id = 0
        self.next_device_id = 0
        self.base_uuid = ""
        self.base_filesystem = ""
        self._id_map = bytearray((MAX_DEVICE_ID + 1) // 8)
        with self._locked():
            self._init_devmapper()

    # --- options (deviceset.go NewDeviceSet) ---------------------------------

    def _parse_options(self):
        self.data_loopback_size = DEFAULT_DATA_LOOPBACK_SIZE
        self.metadata_loopback_size = DEFAULT_METADATA_LOOPBACK_SIZE
        self.base_fs_size = DEFAULT_BASE_FS_SIZE
        self.user_base_size = False
        self.filesystem = "xfs"
        self.mount_options = ""
        self.mkfs_args = []
        self.thin_pool_device = ""
        self.thin_block_size = DEFAULT_THIN_BLOCK_SIZE
        self.min_free_space_percent = DEFAULT_MIN_FREE_SPACE_PERCENT
        self.deferred_remove = False
        self.deferred_delete = False
        for key, value in self.options.items():
            key = key.lower()
            if key == "dm.basesize":
                self.base_fs_size = parse_size(value)
                self.user_base_size = True
            elif key == "dm.loopdatasize":
                self.data_loopback_size = parse_size(value)
            elif key == "dm.loopmetadatasize":
                self.metadata_loopback_size = parse_size(value)
            elif key == "dm.fs":
                if value not in ("ext4", "xfs"):
                    raise GraphDriverError("devmapper: Unsupported filesystem %s" % value)
                self.filesystem = value
            elif key == "dm.mkfsarg":
                self.mkfs_args.append(value)
            elif key == "dm.mountopt":
                self.mount_options = ",".join(x for x in (self.mount_options, value) if x)
            elif key == "dm.thinpooldev":
                self.thin_pool_device = value[len("/dev/mapper/"):] \
                    if value.startswith("/dev/mapper/") else value
            elif key == "dm.blocksize":
                size = parse_size(value)
                # the thin-pool target wants a multiple of 64K
                if size < 64 << 10 or size % (64 << 10):
                    raise GraphDriverError("devmapper: invalid dm.blocksize %s" % value)
                self.thin_block_size = size // SECTOR
            elif key == "dm.min_free_space":
                try:
                    percent = int(str(value).rstrip("%"))
                except ValueError:
                    percent = -1
                if not 0 <= percent < 100:
                    raise GraphDriverError("devmapper: Invalid value %s for option "
                                           "dm.min_free_space" % value)
                self.min_free_space_percent = percent
            elif key == "dm.use_deferred_removal":
                self.deferred_remove = _parse_bool(key, value)
            elif key == "dm.use_deferred_deletion":
                self.deferred_delete = _parse_bool(key, value)
            elif key in ("dm.override_udev_sync_check", "dm.blkdiscard",
                         "dm.xfs_nospace_max_retries"):
                pass   # accepted as Docker does; no effect without udev/libdm
            else:
                raise GraphDriverError("devmapper: Unknown option %s" % key)
        if self.deferred_delete and not self.deferred_remove:
            raise GraphDriverError("devmapper: Deferred deletion can not be enabled as deferred removal "
                                   "is not enabled. Enable deferred removal using --storage-opt "
                                   "dm.use_deferred_removal=true parameter")

    # --- names and files ------------------------------------------------------

    @property
    def loopback_dir(self):
        return os.path.join(self.home, "devicemapper")

    @property
    def metadata_dir(self):
        return os.path.join(self.home, "metadata")

    def metadata_file(self, hash):
        return os.path.join(self.metadata_dir, hash or "base")

    def dm_name(self, hash):
        return "%s-%s" % (self.device_prefix, hash or "base")

    @property
    def pool_name(self):
        return self.thin_pool_device or self.device_prefix + "-pool"

    @property
    def pool_dev(self):
        return "/dev/mapper/" + self.pool_name

    def _locked(self):
        # One DeviceSet lock across processes (Docker's in-process mutex);
        # kept outside the home so the home stays Docker's layout.
        return locked(os.path.join(self._refs.dir, "deviceset.lock"))

    def _write_meta(self, path, data):
        atomic_write(path, data, 0o600)

    # --- device-mapper primitives ---------------------------------------------

    def _exists(self, name):
        # The kernel lists every dm device in sysfs: reading it is Docker's
        # GetInfo without a dmsetup process per question (which costs).
        if os.path.isdir("/sys/block"):
            return name in _active_dm_names()
        try:
            _dmsetup("info", name)
            return True
        except CommandError:
            return False

    def _message(self, text):
        return _dmsetup("message", self.pool_name, "0", text)

    def pool_status(self):
        """(transaction_id, meta used, meta total, data used, data total, block
        sectors) from the thin-pool status line."""
        line = _dmsetup("status", self.pool_name).split()
        # <start> <len> thin-pool <transaction id> <used meta>/<total meta>
        #   <used data>/<total data> ...
        if len(line) < 6 or line[2] != "thin-pool":
            raise GraphDriverError("devicemapper: %s is not a thin pool: %s"
                                   % (self.pool_name, " ".join(line)))
        meta_used, meta_total = (int(x) for x in line[4].split("/"))
        data_used, data_total = (int(x) for x in line[5].split("/"))
        return int(line[3]), meta_used, meta_total, data_used, data_total

    def _pool_block_sectors(self):
        table = _dmsetup("table", self.pool_name).split()
        # 0 <len> thin-pool <meta dev> <data dev> <block size> <low water> ...
        return int(table[5])

    def _activate(self, info):
        if info.deleted:
            raise GraphDriverError("devmapper: Can't activate device %s as it is marked "
                                   "for deletion" % info.hash)
        name = self.dm_name(info.hash)
        if self._exists(name) and not (self.deferred_remove and self._cancel_deferred_removal(name)):
            return
        _dmsetup("create", *self._readonly_flag(), name, "--table", "0 %d thin %s %d"
                 % (info.size // SECTOR, self.pool_dev, info.device_id))

    def _readonly_flag(self):
        # a read-only table makes a read-only block device: nothing the
        # mount does can write through it
        return ("--readonly",) if self.read_only else ()

    def _cancel_deferred_removal(self, name):
        """Keep a device whose deferred removal is pending (Docker's
        cancelDeferredRemovalIfNeeded); True if it went away meanwhile."""
        for attempt in range(100):
            try:
                if "DEFERRED REMOVE" not in _dmsetup("info", name):
                    return False
                _dmsetup("message", name, "0", "@cancel_deferred_remove")
                # without udev, libdevmapper dropped the /dev/mapper node at
                # the deferred remove: the device stays, so must its node
                _dmsetup("mknodes", name)
                return False
            except CommandError as e:
                if "No such device" in e.stderr or "not exist" in e.stderr:
                    return True      # the last close removed it: make it again
                if "busy" not in e.stderr.lower() or attempt == 99:
                    raise
                time.sleep(0.1)
        return False

    def _deactivate(self, info, deferred=None):
        name = self.dm_name(info.hash)
        if self.deferred_remove if deferred is None else deferred:
            # the kernel removes it now, or at the last close if it is open
            if self._exists(name):
                try:
                    _dmsetup("remove", "--deferred", name)
                except CommandError as e:
                    if "No such device" not in e.stderr:   # ErrEnxio: gone already
                        raise
            return
        for attempt in range(200):
            if not self._exists(name):
                return
            try:
                _dmsetup("remove", name)
                return
            except CommandError as e:
                # devicemapper.RemoveDevice: EBUSY right after umount is
                # common (udev, a late close); Docker retries.
                if "busy" not in e.stderr.lower() or attempt == 199:
                    raise
                time.sleep(0.05)

    # --- transactions (deviceset.go) ------------------------------------------

    def _save_transaction(self):
        self._write_meta(os.path.join(self.metadata_dir, TRANSACTION_META_FILE),
                         json.dumps({"open_transaction_id": self.open_transaction_id,
                                     "device_hash": self._tx_hash,
                                     "device_id": self._tx_device_id},
                                    separators=(",", ":")))

    def _open_transaction(self, hash, device_id):
        self.open_transaction_id = self.transaction_id + 1
        self._tx_hash = hash
        self._tx_device_id = device_id
        self._save_transaction()

    def _refresh_transaction(self, device_id):
        self._tx_device_id = device_id
        self._save_transaction()

    def _close_transaction(self):
        try:
            self._message("set_transaction_id %d %d"
                          % (self.transaction_id, self.open_transaction_id))
        except CommandError as e:
            raise GraphDriverError("devmapper: Error setting devmapper transaction ID: %s"
                                   % e)
        self.transaction_id = self.open_transaction_id

    def _process_pending_transaction(self):
        path = os.path.join(self.metadata_dir, TRANSACTION_META_FILE)
        try:
            with open(path) as f:
                tx = json.load(f)
        except FileNotFoundError:
            self.open_transaction_id = self.transaction_id
            return
        except ValueError as e:
            raise GraphDriverError("devmapper: corrupt %s: %s" % (path, e))
        self.open_transaction_id = tx.get("open_transaction_id", 0)
        self._tx_hash = tx.get("device_hash", "")
        self._tx_device_id = tx.get("device_id", 0)
        if self.open_transaction_id <= self.transaction_id:
            # Completed (or, if below, something odd that Docker only logs).
            return
        # The pool never saw set_transaction_id: the device may have been
        # made but its metadata is not to be trusted. Docker rolls it back:
        # delete it from the pool (may fail if it was never made), drop its
        # metadata, free the id.
        with contextlib.suppress(CommandError):
            self._message("delete %d" % self._tx_device_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.metadata_file(self._tx_hash))
        self._mark_free(self._tx_device_id)
        self.open_transaction_id = self.transaction_id

    # --- device ids -------------------------------------------------------------

    def _mark_used(self, device_id):
        self._id_map[device_id // 8] |= 1 << (device_id % 8)

    def _mark_free(self, device_id):
        self._id_map[device_id // 8] &= ~(1 << (device_id % 8)) & 0xff

    def _is_free(self, device_id):
        return not self._id_map[device_id // 8] & (1 << (device_id % 8))

    def _next_free_device_id(self):
        for tried in range(MAX_DEVICE_ID + 1):   # pylint: disable=unused-variable
            self.next_device_id = (self.next_device_id + 1) & MAX_DEVICE_ID
            if self._is_free(self.next_device_id):
                self._mark_used(self.next_device_id)
                return self.next_device_id
        raise GraphDriverError("devmapper: Unable to find a free device ID")

    def _save_device_set_metadata(self):
        self._write_meta(os.path.join(self.metadata_dir, DEVICE_SET_META_FILE),
                         json.dumps({"next_device_id": self.next_device_id,
                                     "BaseDeviceUUID": self.base_uuid,
                                     "BaseDeviceFilesystem": self.base_filesystem},
                                    separators=(",", ":")))

    # --- metadata -----------------------------------------------------------

    def lookup(self, hash):
        """The DevInfo of ``hash`` ("" for the base), or None."""
        path = self.metadata_file(hash)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise GraphDriverError("devmapper: corrupt metadata %s: %s" % (path, e))
        return DevInfo(hash, data["device_id"], data["size"], data["transaction_id"],
                       data.get("initialized", False), data.get("deleted", False))

    def _save(self, info):
        self._write_meta(self.metadata_file(info.hash), info.to_json())

    def _device_files(self):
        for name in sorted(os.listdir(self.metadata_dir)):
            if (name.startswith(".") or name.endswith(".migrated")
                    or name in (DEVICE_SET_META_FILE, TRANSACTION_META_FILE)):
                continue
            yield "" if name == "base" else name

    # --- start ----------------------------------------------------------------

    def _check_pool_exists(self):
        """Init's answer without making a pool: direct-lvm needs its pool,
        loop-lvm needs loop devices (the files and pool are made at start)."""
        if self.thin_pool_device:
            if not self._exists(self.thin_pool_device):
                raise GraphDriverError("devmapper: Unable to find thin pool %s (dm.thinpooldev)"
                                       % self.thin_pool_device)
        elif not os.path.exists("/dev/loop-control"):
            raise PrerequisitesMissing(self.name, "loop-lvm needs loop devices (/dev/loop-control)")

    def _open_read_only(self):
        """What reading an existing store needs, making nothing: the pool
        is activated by the first get (a migration source's engine is
        stopped, and Docker's Shutdown removed it)."""
        if not os.path.isdir(self.home):
            return
        st = os.stat(self.home)
        self.device_prefix = "docker-%d:%d-%d" % (os.major(st.st_dev), os.minor(st.st_dev),
                                                  st.st_ino)
        self.base_filesystem = ""
        self._load_device_set_metadata()
        self.filesystem = self.base_filesystem or self.filesystem

    def _ensure_pool(self):
        if self._exists(self.pool_name):
            return
        for name in ("data", "metadata"):
            if not os.path.isfile(os.path.join(self.loopback_dir, name)):
                raise GraphDriverError("devmapper: no thin pool %s and no loop file %s to "
                                       "make it from" % (self.pool_name,
                                                         os.path.join(self.loopback_dir, name)))
        self._create_loopback_pool()
        self._own_pool = True

    def _release_pool(self):
        """Read-only, the pool this driver made goes once nothing is mounted:
        the host is left as found (autoclear then frees the loop devices)."""
        if self._own_pool and not self._refs.active():
            _dmsetup("remove", self.pool_name)
            self._own_pool = False

    def _init_devmapper(self):
        created_loopback = False
        if not self._exists(self.pool_name):
            if self.thin_pool_device:
                raise GraphDriverError("devmapper: Unable to find thin pool %s (dm.thinpooldev)"
                                       % self.thin_pool_device)
            created_loopback = self._create_loopback_pool()
        elif self.thin_pool_device:
            # direct-lvm: Docker refuses a pool that already holds
            # devices it does not know about only when the home is new.
            pass
        self.transaction_id = self.pool_status()[0]
        # Docker: on a freshly made pool the old metadata means nothing.
        if not created_loopback:
            for hash in self._device_files():
                info = self.lookup(hash)
                self._mark_used(info.device_id)
            self._process_pending_transaction()
        self._load_device_set_metadata()
        self._setup_base_image()
        self._cleanup_deleted()

    def _ensure_image(self, name, size):
        mkdir(self.loopback_dir, 0o700)
        path = os.path.join(self.loopback_dir, name)
        created = not os.path.exists(path)
        fd = os.open(path, os.O_RDONLY if self.read_only else os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # truncate makes it sparse: no block is written until used;
            # read-only, the files are used as they are
            if os.fstat(fd).st_size < size and not self.read_only:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return path, created

    def _create_loopback_pool(self):
        data, created_data = self._ensure_image("data", self.data_loopback_size)
        meta, created_meta = self._ensure_image("metadata", self.metadata_loopback_size)
        data_fd, data_dev = attach_loop(data, self.read_only)
        try:
            meta_fd, meta_dev = attach_loop(meta, self.read_only)
            try:
                length = os.path.getsize(data) // SECTOR
                # read-only: the pool's read_only feature opens its metadata
                # device read-only and commits nothing (a thin-pool target
                # may not be in a read-only table: its thin devices are)
                features = ["skip_block_zeroing"] + (["read_only"] if self.read_only else [])
                _dmsetup("create", self.pool_name, "--table",
                         "0 %d thin-pool %s %s %d %d %d %s"
                         % (length, meta_dev, data_dev, self.thin_block_size,
                            LOW_WATER_MARK, len(features), " ".join(features)))
            finally:
                os.close(meta_fd)
        finally:
            os.close(data_fd)
        if created_data or created_meta:
            # a new pool: forget whatever metadata an old one left
            for hash in list(self._device_files()):
                os.unlink(self.metadata_file(hash))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.metadata_dir, TRANSACTION_META_FILE))
        return created_data or created_meta

    def _load_device_set_metadata(self):
        path = os.path.join(self.metadata_dir, DEVICE_SET_META_FILE)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except ValueError as e:
            raise GraphDriverError("devmapper: corrupt %s: %s" % (path, e))
        self.next_device_id = data.get("next_device_id", 0)
        self.base_uuid = data.get("BaseDeviceUUID", "")
        self.base_filesystem = data.get("BaseDeviceFilesystem", "")

    def _setup_base_image(self):
        old = self.lookup("")
        if old is not None and old.initialized and not old.deleted:
            if self.base_filesystem and self.base_filesystem != self.filesystem:
                # Docker warns and keeps the filesystem already on disk.
                self.filesystem = self.base_filesystem
            if self.user_base_size and self.base_fs_size > old.size:
                self._grow_base(old)
            self.base_fs_size = old.size
            return
        if old is not None:
            # "Removing uninitialized base image": a start interrupted mkfs.
            self._delete_device(old)
        self._create_base_image()

    def _create_register_device(self, hash, size, origin=None):
        device_id = self._next_free_device_id()
        self._open_transaction(hash, device_id)
        while True:
            try:
                if origin is None:
                    self._message("create_thin %d" % device_id)
                else:
                    self._message("create_snap %d %d" % (device_id, origin.device_id))
                break
            except CommandError as e:
                if "File exists" not in e.stderr and "exists" not in e.stderr:
                    self._mark_free(device_id)
                    raise
                # ErrDeviceIDExists: the pool knows this id; take the next
                device_id = self._next_free_device_id()
                self._refresh_transaction(device_id)
        info = DevInfo(hash, device_id, size, self.open_transaction_id)
        try:
            self._save(info)
        except BaseException:
            with contextlib.suppress(CommandError):
                self._message("delete %d" % device_id)
            self._mark_free(device_id)
            raise
        self._close_transaction()
        self._save_device_set_metadata()
        return info

    def _create_base_image(self):
        info = self._create_register_device("", self.base_fs_size)
        self._activate(info)
        dev = "/dev/mapper/" + self.dm_name("")
        if self.filesystem == "ext4":
            Command("mkfs.ext4", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                    *(self.mkfs_args + [dev])).run()
        else:
            Command("mkfs.xfs", *(self.mkfs_args + [dev])).run()
        info.initialized = True
        self._save(info)
        self.base_uuid = Command("blkid", "-s", "UUID", "-o", "value", dev).run().strip()
        self.base_filesystem = self.filesystem
        self._save_device_set_metadata()
        self._deactivate(info)

    def _grow_base(self, info):
        # Docker's resizeBaseDevice: grow the device, then its filesystem.
        info.size = self.base_fs_size
        self._save(info)
        self._deactivate(info)
        self._grow_fs(info)

    def _grow_fs(self, info):
        self._activate(info)
        dev = "/dev/mapper/" + self.dm_name(info.hash)
        makedirs(refcount.RUN_DIR, 0o700)
        tmp = tempfile.mkdtemp(prefix="dm-grow-", dir=refcount.RUN_DIR)
        try:
            mount(dev, tmp, self.filesystem, 0, self._mount_data())
            try:
                if self.filesystem == "ext4":
                    Command("resize2fs", dev).run()
                else:
                    Command("xfs_growfs", tmp).run()
            finally:
                unmount(tmp, 0)
        finally:
            os.rmdir(tmp)
            self._deactivate(info)

    def _mount_data(self):
        opts = [o for o in self.mount_options.split(",") if o]
        # snapshots share the base's xfs UUID: xfs refuses a duplicate
        if self.filesystem == "xfs":
            opts.append("nouuid")
        # read-only: no journal replay, which writes even on a ro mount
        # (and fails on a read-only device)
        if self.read_only:
            opts.append("norecovery" if self.filesystem == "xfs" else "noload")
        return ",".join(opts)

    def _delete_device(self, info, sync=True):
        """Docker's deleteDevice. ``sync=False`` with deferred deletion: a
        device the pool reports busy is marked deleted, not an error."""
        # Deferred removal here only with deferred deletion: otherwise wait
        # for a device that is busy for a moment (as Docker does).
        self._deactivate(info, deferred=self.deferred_remove and self.deferred_delete)
        self._open_transaction(info.hash, info.device_id)
        try:
            self._message("delete %d" % info.device_id)
        except CommandError as e:
            busy = "busy" in e.stderr.lower()
            if busy and self.deferred_delete and not sync:
                if not info.deleted:
                    info.deleted = True
                    self._save(info)
                self._close_transaction()
                return False
            # already gone from the pool (an earlier rollback): drop the record
            if "No data available" not in e.stderr and "not found" not in e.stderr:
                raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.metadata_file(info.hash))
        self._mark_free(info.device_id)
        self._close_transaction()
        return True

    def deleted_devices(self):
        """Hashes of the devices marked for deferred deletion."""
        return [h for h in self._device_files() if (self.lookup(h) or DevInfo(h, 0, 0, 0)).deleted]

    def _cleanup_deleted(self):
        """Docker's cleanupDeletedDevices: try each marked device again."""
        if not self.deferred_delete or self.read_only:
            return
        for hash in self.deleted_devices():
            with contextlib.suppress(CommandError):
                self._delete_device(self.lookup(hash), sync=False)

    # --- the driver API ---------------------------------------------------------

    def mount_dir(self, layer_id):
        return os.path.join(self.home, "mnt", check_id(layer_id))

    def create(self, id, parent=None, opts=None):
        self._add_device(id, parent, opts)

    def create_read_write(self, id, parent=None, opts=None):
        self._add_device(id, parent, opts)

    def _add_device(self, id, parent, opts):
        check_id(id)
        size = 0
        for key, value in (opts or {}).items():
            if key.lower() != "size":
                raise GraphDriverError("layer %s: Unknown option %s" % (id, key))
            size = parse_size(value)
        with self._locked():
            base = self.lookup(parent or "")
            if base is None:
                raise LayerNotFound(parent or "base", "devmapper: Unknown device %s"
                                    % self.metadata_file(parent or ""))
            old = self.lookup(id)
            if old is not None and old.deleted:
                self._cleanup_deleted()
                old = self.lookup(id)
            if old is not None:
                if old.deleted:
                    raise GraphDriverError("layer %s: devmapper: device %s already exists. Deleted=true (its "
                                           "deferred deletion waits for the device to be closed)" % (id, id))
                raise LayerExists(id)
            if size == 0:
                size = base.size
            if size < base.size:
                raise QuotaError("layer %s: devmapper: Container size cannot be smaller "
                                 "than %d bytes (base size)" % (id, base.size))
            name = self.dm_name(base.hash)
            # An active origin is suspended so that its snapshot is consistent.
            active = self._exists(name)
            if active:
                _dmsetup("suspend", name)
            try:
                info = self._create_register_device(id, size, origin=base)
            finally:
                if active:
                    _dmsetup("resume", name)
            if size > base.size:
                self._grow_fs(info)

    def remove(self, id):
        check_id(id)
        with self._locked():
            info = self.lookup(id)
            if info is None:
                return
            mnt = self.mount_dir(id)
            if is_mountpoint(mnt):
                unmount(mnt, 0)
            self._refs.forget(id)
            self._delete_device(info, sync=False)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(mnt)
            self._cleanup_deleted()

    def get(self, id, mount_label=""):
        mnt = self.mount_dir(id)
        rootfs = os.path.join(mnt, "rootfs")
        with self._locked(), self._refs.transaction(id) as count:
            info = self.lookup(id)
            if info is None:
                raise LayerNotFound(id, self.metadata_file(id))
            if count.value == 0 or not is_mountpoint(mnt):
                mkdir(mnt, 0o755)
                if self.read_only:
                    self._ensure_pool()
                self._activate(info)
                try:
                    mount("/dev/mapper/" + self.dm_name(id), mnt, self.filesystem,
                          MS_RDONLY if self.read_only else 0, self._mount_data())
                except BaseException:
                    self._deactivate(info)
                    if self.read_only:
                        self._release_pool()
                    raise
                count.value = 0
            count.value += 1
            if not (self.read_only and os.path.isdir(rootfs)):
                mkdir(rootfs, 0o755)
            # Docker writes the layer id next to rootfs on first Get.
            id_file = os.path.join(mnt, "id")
            if not os.path.exists(id_file) and not self.read_only:
                atomic_write(id_file, id, 0o600)
            return rootfs

    def get_mounts(self, id, parent=None):
        return True

    def references(self, id):
        return self._refs.count(id)

    def put(self, id):
        mnt = self.mount_dir(id)

        def release():
            if is_mountpoint(mnt):
                unmount(mnt, 0)
            info = self.lookup(id)
            if info is not None:
                self._deactivate(info)
            # Docker leaves the empty mountpoint; Remove deletes it.
        with self._locked():
            if not self._refs.put(id, release):
                return
        if self.read_only:
            with self._locked():
                self._release_pool()

    def exists(self, id):
        info = self.lookup(check_id(id))
        return info is not None and not info.deleted

    def layer_path(self, id):
        return self.metadata_file(check_id(id))   # the thin device's record

    def layer_ids(self):
        return {h for h in self._device_files() if h and self.exists(h)}

    def metadata(self, id):
        info = self.lookup(check_id(id))
        if info is None:
            raise LayerNotFound(id, self.metadata_file(id))
        return {"DeviceId": str(info.device_id), "DeviceSize": str(info.size),
                "DeviceName": self.dm_name(id)}

    def status(self):
        tx, meta_used, meta_total, data_used, data_total = self.pool_status()
        block = self._pool_block_sectors() * SECTOR
        data_loop = os.path.join(self.loopback_dir, "data")
        meta_loop = os.path.join(self.loopback_dir, "metadata")
        table = _dmsetup("table", self.pool_name).split()
        version = ""
        for line in _dmsetup("version").splitlines():
            if line.startswith("Library version:"):
                version = line.split(":", 1)[1].strip()
        status = [
            ("Pool Name", self.pool_name),
            ("Pool Blocksize", _human(block)),
            ("Base Device Size", _human(self.base_fs_size)),
            ("Backing Filesystem", self.filesystem),
            ("Udev Sync Supported", str(os.path.exists("/run/udev/control")).lower()),
        ]
        if not self.thin_pool_device:
            status += [("Data file", _block_dev_name(table[4])),
                       ("Metadata file", _block_dev_name(table[3]))]
        status += [
            ("Data Space Used", _human(data_used * block)),
            ("Data Space Total", _human(data_total * block)),
            ("Data Space Available", _human((data_total - data_used) * block)),
            ("Metadata Space Used", _human(meta_used * 4096)),
            ("Metadata Space Total", _human(meta_total * 4096)),
            ("Metadata Space Available", _human((meta_total - meta_used) * 4096)),
            ("Thin Pool Minimum Free Space",
             _human(data_total * block * self.min_free_space_percent // 100)),
            ("Deferred Removal Enabled", str(self.deferred_remove).lower()),
            ("Deferred Deletion Enabled", str(self.deferred_delete).lower()),
            ("Deferred Deleted Device Count", str(len(self.deleted_devices()))),
        ]
        if not self.thin_pool_device:
            status += [("Data loop file", data_loop), ("Metadata loop file", meta_loop)]
        status.append(("Library Version", version))
        return status

    def cleanup(self):
        """Docker's Shutdown: unmount, deactivate every device, and (loop-lvm)
        remove the pool, which lets autoclear free the loop devices."""
        with self._locked():
            for id in self._refs.active():
                mnt = self.mount_dir(id)
                if is_mountpoint(mnt):
                    unmount(mnt, 0)
                self._refs.forget(id)
            if self.read_only and not self._own_pool:
                return      # a pool this driver did not activate stays as found
            for hash in list(self._device_files()):
                info = self.lookup(hash)
                if info is not None:
                    self._deactivate(info)
            if not self.thin_pool_device and self._exists(self.pool_name):
                _dmsetup("remove", self.pool_name)
            self._own_pool = False


def _active_dm_names():
    names = set()
    for entry in glob.glob("/sys/block/dm-*/dm/name"):
        try:
            with open(entry) as f:
                names.add(f.read().strip())
        except OSError:
            continue      # removed while we looked
    return names


def _block_dev_name(majmin):
    """'7:0' (as dmsetup table shows a device) -> '/dev/loop0' (docker info)."""
    try:
        return "/dev/" + os.path.basename(os.readlink("/sys/dev/block/" + majmin))
    except OSError:
        return majmin


def _human(n):
    """go-units HumanSize: decimal units, 4 significant digits, no space
    ("10.74GB", as docker info prints it)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    value = float(n)
    i = 0
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return "%.4g%s" % (value, units[i])

# -*- coding: utf-8 -*-
# Copyright: strata.graphdriver contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""driver_migration's plans (the shape of _common.run_plan): between two
graphdrivers, onto Docker's containerd image store, and back from it (the
rollback). The carrying itself is the library's (graphdriver.migrate,
graphdriver.to_containerd); this decides which, and says what it does."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.strata.graphdriver.plugins.module_utils import _all_drivers  # noqa: F401 pylint: disable=unused-import
from ansible_collections.strata.graphdriver.plugins.module_utils._common import data_root_of
from ansible_collections.strata.graphdriver.plugins.module_utils._daemon_json import storage_opts_dict, storage_settings
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import engine, migrate, registered, to_containerd
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.imagestore import ImageStore
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.layerstore import LayerStore
from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver.progress import ProgressFile

CONTAINERD = to_containerd.TARGET
# O(target), O(source) and O(snapshotter) take these (aufs and overlay: read-only sources).
TARGETS = sorted(registered() + [CONTAINERD])
SOURCES = sorted(registered(sources=True) + [CONTAINERD])
SNAPSHOTTERS = sorted(to_containerd.SNAPSHOTTERS)

RUNNING_HINT = 'the strata.graphdriver.driver_migration role stops the engine, migrates and starts it again'


def plan(params):
    """The plan for the module's parameters."""
    root, config = data_root_of(params)
    target = params['target']
    if target == CONTAINERD:
        source = resolve_source(params['source'], CONTAINERD, root, config)
        if source not in registered(sources=True):
            raise migrate.MigrationError('source %s: the containerd store takes the images of a graphdriver'
                                         % source)
        return OntoContainerd(root, source, params)
    if params['source'] == CONTAINERD:
        return BackToGraphdriver(root, target, params)
    if params['remove_source'] and not params['force']:
        raise migrate.MigrationError('remove_source deletes the layers of the source driver, the rollback of '
                                     'this migration: set force: true to confirm')
    return GraphdriverMigration(root, resolve_source(params['source'], target, root, config), target, params)


def resolve_source(source, target, root, config):
    """The source driver asked for, else daemon.json's, else the single other one with state.

    daemon.json may already declare the target (switched with force, images
    hidden): then the images are looked for where the state is.
    """
    if source:
        return source
    declared = storage_settings(config)[0]
    if declared and declared != target:
        return declared
    # graphdrivers only: <data-root>/containerd is every engine's containerd (20.10's runs containers there)
    candidates = [d for d in root.drivers_with_state(registered(sources=True)) if d != target]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise migrate.MigrationError('no driver other than %s holds state under %s and daemon.json declares '
                                     'none: nothing to migrate from' % (target, root))
    raise migrate.MigrationError('several drivers hold state under %s (%s) and daemon.json declares none: '
                                 'say which one with source' % (root, ', '.join(candidates)))


def _progress(params):
    return ProgressFile(params['progress_file']) if params['progress_file'] else None


def image_view(root, driver):
    """Diff mode's view of one driver: the images and tags its store lists."""
    store = ImageStore(root.path, driver)
    return {'driver': driver, 'images': sorted(store.images()), 'tags': sorted(store.tags())}


class GraphdriverMigration(object):
    """From one graphdriver's stores to another's (graphdriver.migrate)."""

    def __init__(self, root, source, target, params):
        self.root, self.source, self.target, self.params = root, source, target, params
        self.src_opts = storage_opts_dict(params['source_options'])
        self.dst_opts = storage_opts_dict(params['target_options'])
        self.remove_source = params['remove_source']
        self.source_removed = False
        self.plan = self.done = None
        self.commands, self.changed, self.before, self.tags = [], False, {}, {}
        if self.remove_source and self._removed_already():
            return
        self.plan = self.done = migrate.plan(root.path, source, target, self.src_opts, self.dst_opts)
        self.tags = ImageStore(root.path, source).tags()
        self.before = {'source': image_view(root, source), 'target': image_view(root, target)}
        self.commands = self._steps()
        self.changed = (bool(self.plan.layers_to_copy or self.plan.containers_to_copy)
                        or self._metadata_missing() or self.remove_source)

    def _removed_already(self):
        """A second run of remove_source: the source store is gone, the target holds the images."""
        return not self.root.has_layer_store(self.source) and self.root.has_layer_store(self.target)

    def _metadata_missing(self):
        """Would the target's image configs or tags change?"""
        target = ImageStore(self.root.path, self.target)
        have, have_tags = target.images(), target.tags()
        return (any(i not in have for i in self.plan.images)
                or any(have_tags.get(r) != i for r, i in self.tags.items()))

    def _steps(self):
        """The steps of a run, in the order migrate() takes them."""
        p, root = self.plan, self.root
        sizes = {}
        if p.layers_to_copy:
            store = LayerStore(root.path, root.driver(p.source, self.src_opts, read_only=True), recover=False)
            sizes = dict((layer.chain_id, layer.size) for layer in store.layers())
        out = ['copy layer %s (%d bytes) from %s to %s' % (chain, sizes.get(chain, 0), p.source, p.target)
               for chain in p.layers_to_copy]
        out.append('copy image/%s/imagedb and image/%s/distribution to image/%s' % (p.source, p.source, p.target))
        out += ['carry container %s (init and RW layers, layerdb/mounts, config.v2.json Driver) to %s'
                % (c, p.target) for c in p.containers_to_copy]
        if p.tags:
            out.append('tag %s in image/%s/repositories.json' % (', '.join(p.tags), p.target))
        if self.remove_source:
            out.append('remove every %s layer, %s and %s'
                       % (p.source, root.home(p.source), root.image_root(p.source)))
        return out

    def planned(self):
        if self.plan is None:
            return {}
        source = self.before['source']
        if self.remove_source:
            source = {'driver': self.source, 'images': [], 'tags': []}
        target = {'driver': self.target,
                  'images': sorted(set(self.before['target']['images']) | set(self.plan.images)),
                  'tags': sorted(set(self.before['target']['tags']) | set(self.tags))}
        return {'source': source, 'target': target}

    def apply(self):
        if self.plan is None:
            return {}
        # the host's engine will run the target: its rules where engines differ
        self.done = migrate.migrate(self.root.path, self.source, self.target, self.src_opts, self.dst_opts,
                                    progress=_progress(self.params), engine_version=engine.installed_version())
        self.changed = self.done.changed
        if self.remove_source:
            migrate.remove_source(self.root.path, self.source, self.src_opts)
            self.changed = self.source_removed = True
        elif not self.changed:
            self.commands = []
        return self.planned()

    def result(self, after):
        out = dict(data_root=self.root.path, source=self.source, target=self.target, images=[], tags=self.tags,
                   layers_to_copy=[], bytes_to_copy=0, layers_copied=[], layers_present=[], containers=[],
                   containers_copied=[], source_removed=self.source_removed, seconds=0.0)
        if self.plan is not None:
            p, done = self.plan, self.done
            out.update(images=p.images, layers_to_copy=p.layers_to_copy, bytes_to_copy=p.bytes_to_copy,
                       bytes_free=p.bytes_free, layers_present=p.layers_present, containers=p.containers,
                       layers_copied=done.layers_copied, containers_copied=done.containers_copied,
                       seconds=round(done.seconds, 3))
        return out

    def diff(self, after):
        return {'before': self.before, 'after': after} if self.plan is not None else None


class OntoContainerd(object):
    """From a graphdriver's stores into Docker's containerd image store."""

    before = None

    def __init__(self, root, source, params):
        self.root, self.source, self.params = root, source, params
        self.options = {'snapshotter': params['snapshotter'], 'address': params['containerd_address']}
        self.plan = to_containerd.plan(root.path, source, target_options=self.options)
        self.changed = self.plan.changed
        p = self.plan
        self.commands = []
        if p.images_to_copy:
            self.commands.append('ctr images import: %d images (%d layers, their exact tars) from %s, unpacked into '
                                 'the %s snapshotter' % (len(p.images_to_copy), len(p.layers_to_copy), p.source,
                                                         p.snapshotter))
        self.commands += ['carry container %s: lease, %s-init and %s snapshots from its %s layers; config.v2.json '
                          'Driver, Image and ImageManifest' % (c, c, c, p.source) for c in p.containers_to_copy]

    def planned(self):
        return self.plan.as_dict()

    def apply(self):
        done = to_containerd.migrate(self.root.path, self.source, target_options=self.options,
                                     progress=_progress(self.params))
        self.changed = done.changed
        if not self.changed:
            self.commands = []
        return done.as_dict()

    def result(self, after):
        return dict(after, data_root=self.root.path, source=self.source, target=CONTAINERD, source_removed=False)

    def diff(self, after):
        return None     # the containerd store has no view here to compare


class BackToGraphdriver(object):
    """The rollback of OntoContainerd: the carried containers' config.v2.json
    pointed at the graphdriver again (its store was not written)."""

    before = None

    def __init__(self, root, graphdriver, params):
        self.root, self.graphdriver = root, graphdriver
        self.options = {'snapshotter': params['snapshotter'], 'address': params['containerd_address']}
        self.todo = to_containerd.containers_to_restore(root.path, graphdriver)
        self.changed = bool(self.todo)
        self.commands = ['point container %s at %s again (config.v2.json Driver, Image)' % (c, graphdriver)
                         for c in self.todo]

    def planned(self):
        return {'containers': self.todo, 'containers_copied': []}

    def apply(self):
        restored = []
        if self.todo:
            restored = to_containerd.restore_containers(self.root.path, self.graphdriver, self.options)
        return {'containers': self.todo, 'containers_copied': restored}

    def result(self, after):
        return dict(after, data_root=self.root.path, source=CONTAINERD, target=self.graphdriver,
                    source_removed=False)

    def diff(self, after):
        return None

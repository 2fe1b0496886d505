"""driver_migration's containerd side: onto Docker's containerd image store
(target containerd) and back (source containerd, the rollback)."""

from ansible_collections.strata.graphdriver.plugins.module_utils.graphdriver import to_containerd


def target_options(params):
    return {'snapshotter': params['snapshotter'], 'address': params['containerd_address']}


def onto_containerd(data_root, source, params, check_mode, progress=None):
    """(changed, result fields, commands) of a migration into the containerd store."""
    opts = target_options(params)
    plan = to_containerd.plan(data_root, source, target_options=opts)
    commands = steps(plan)
    done = plan
    if not check_mode:
        done = to_containerd.migrate(data_root, source, target_options=opts, progress=progress)
        if not done.changed:
            commands = []
    result = done.as_dict()
    return (plan.changed if check_mode else done.changed), result, commands


def steps(plan):
    out = []
    if plan.images_to_copy:
        out.append('ctr images import: %d images (%d layers, their exact tars) from %s, unpacked into the %s '
                   'snapshotter' % (len(plan.images_to_copy), len(plan.layers_to_copy), plan.source,
                                    plan.snapshotter))
    out += ['carry container %s: lease, %s-init and %s snapshots from its %s layers; config.v2.json Driver, '
            'Image and ImageManifest' % (c, c, c, plan.source) for c in plan.containers_to_copy]
    return out


def back_to_graphdriver(data_root, graphdriver, params, check_mode):
    """(changed, result fields, commands) of the rollback: carried containers'
    config.v2.json pointed at ``graphdriver`` again (its store was not written)."""
    todo = to_containerd.containers_to_restore(data_root, graphdriver)
    commands = ['point container %s at %s again (config.v2.json Driver, Image)' % (c, graphdriver)
                for c in todo]
    restored = todo
    if not check_mode and todo:
        restored = to_containerd.restore_containers(data_root, graphdriver, target_options(params))
    return bool(todo), {'containers': todo, 'containers_copied': [] if check_mode else restored}, commands

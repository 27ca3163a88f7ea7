#!/bin/sh
# The sidecar's entry point: blobmount-sidecar MOUNTPOINT [blobmount mount options...]
# Makes the mount point (inside the shared folder) and mounts there in the foreground,
# as PID 1: SIGTERM unmounts, uploads what is pending, and exits.
set -eu
mountpoint="${1:-/data/blob}"
[ "$#" -gt 0 ] && shift
# A sidecar that was killed leaves its mount in the shared folder, dead (its daemon is
# gone): detach it, or the new daemon refuses the mount point. No other daemon serves
# this folder: the sidecar is the only one that mounts it.
if grep -qs " $mountpoint fuse.blobmount " /proc/self/mounts; then
    umount -l "$mountpoint" || fusermount3 -u -z "$mountpoint" || true
fi
mkdir -p "$mountpoint"
exec blobmount mount --foreground "$mountpoint" "$@"

#!/bin/sh
# The sidecar's entry point: blobmount-sidecar MOUNTPOINT [blobmount mount options...]
# Makes the mount point (inside the shared folder) and mounts there in the foreground,
# as PID 1: SIGTERM unmounts, uploads what is pending, and exits.
set -eu
mountpoint="${1:-/data/blob}"
[ "$#" -gt 0 ] && shift
mkdir -p "$mountpoint"
exec blobmount mount --foreground "$mountpoint" "$@"

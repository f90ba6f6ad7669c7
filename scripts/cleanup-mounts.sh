#!/usr/bin/env bash
# Unmount fakeproc FUSE mounts (fsname "fakeproc", type fuse or fuse.fakeproc),
# live or stale, and nothing else.
#   cleanup-mounts.sh            every fakeproc mount
#   cleanup-mounts.sh DIR...     only fakeproc mounts at or below these directories
# Exits 1 if a mount could not be removed.
set -uo pipefail

roots=()
for d in "$@"; do roots+=("$(realpath -m -- "$d")"); done

selected() {  # $1 = mount point; true when it is at/below one of the roots (or no roots given)
    ((${#roots[@]})) || return 0
    local r
    for r in "${roots[@]}"; do
        [[ $1 == "$r" || $1 == "${r%/}/"* ]] && return 0
    done
    return 1
}

# Mount points, deepest (latest) first; /proc/mounts escapes space, tab, \n and \ as \ooo.
mapfile -t targets < <(
    awk '$1 == "fakeproc" && ($3 == "fuse" || $3 == "fuse.fakeproc") { print $2 }' /proc/mounts | tac
)

status=0
for escaped in "${targets[@]}"; do
    mp=$(printf '%b' "$escaped")
    selected "$mp" || continue
    if fusermount3 -u -- "$mp" 2>/dev/null || fusermount3 -uz -- "$mp" 2>/dev/null ||
       umount -l -- "$mp" 2>/dev/null; then
        echo "cleanup-mounts: unmounted $mp"
    else
        echo "cleanup-mounts: could not unmount $mp" >&2
        status=1
    fi
done
exit $status

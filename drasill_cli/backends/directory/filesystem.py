"""Which file system a mesh directory lives on: OS locks taken on one client of a network file
system do not exclude another client, so a directory mesh there is only safe on one machine
(the directory backend's `filesystem` finding in `mesh doctor`).

Only the configured path is resolved (a path not made yet lies on its nearest existing
parent's mount); nothing in the mesh is looked at.
"""

from __future__ import annotations

import os
from pathlib import Path

from drasill_cli.storage.maintenance import Finding

MOUNTS = Path("/proc/mounts")
# File systems where an OS lock taken on one client does not exclude another client.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
    }
)


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(path: Path, mounts_text: str) -> tuple[str, str] | None:
    """(mount point, file system type) of the mount holding `path`, from /proc/mounts text."""
    target = str(path)
    best: tuple[str, str] | None = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = _unescape(fields[1]), fields[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def check_filesystem(root: Path) -> Finding:
    """Warn when the mesh lives on a network file system, where OS locks do not exclude."""
    where = Path(os.path.realpath(root))
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        return Finding("filesystem", "warn", "cannot read /proc/mounts to tell the file system")
    found = filesystem_of(where, mounts)
    if found is None:
        return Finding("filesystem", "warn", f"no mount found for {where}")
    point, fstype = found
    if fstype in NETWORK_FS or fstype.split(".")[0] in NETWORK_FS:
        return Finding(
            "filesystem",
            "warn",
            f"{root} is on {fstype} (mounted at {point}): file locks taken on one machine do "
            "not exclude processes on another, so claims and locks are only safe when every "
            "agent runs on this one machine",
            "put the mesh on a local disk (--mesh-dir or DRASILL_MESH_DIR), e.g. under "
            "~/.local/share or /tmp",
        )
    return Finding("filesystem", "ok", f"{root} is on {fstype} (mounted at {point})")

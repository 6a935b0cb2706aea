"""Running `mesh` as a user other than the test's own (issue 24).

Two ways, both only open to root:
- `without_dac`: the test's own uid, without the capabilities that let root read and write any
  file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a file its owner cannot read is unreadable to
  the command, as for any other user (not root: the command runs as it is);
- `OtherUser`: a second uid (`nobody`, in a group made for the test's meshes), for group-shared
  meshes written by two users.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_DAC_CAPS = "-dac_override,-dac_read_search"


def without_dac(argv: Sequence[str | bytes]) -> list[str | bytes]:
    """`argv` run so that file modes bind it: as root, through setpriv dropping root's
    file-access capabilities (bounding and inheritable sets); otherwise unchanged."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv (util-linux) is needed to drop root's file capabilities")
    return [setpriv, f"--inh-caps={_DAC_CAPS}", f"--bounding-set={_DAC_CAPS}", *argv]


def dac_skip_reason() -> str | None:
    """Why `without_dac` cannot be used here, or None."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "root without setpriv cannot give up its file capabilities"
    return None


@dataclass(frozen=True)
class OtherUser:
    """A second uid that can run this checkout's `mesh`."""

    uid: int
    gid: int
    python: str
    pythonpath: str

    def argv(self, args: Sequence[str | bytes]) -> list[str | bytes]:
        return [self.python, "-m", "drasill_cli", *args]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        merged = dict(env)
        merged["PYTHONPATH"] = self.pythonpath
        return merged

    def popen_kwargs(self) -> dict[str, object]:
        """`subprocess` arguments that start the child as this user (group: the shared one)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": [self.gid]}


def scratch_dir(prefix: str) -> Path:
    """A folder under /tmp that another user can reach (the test's tmp_path is 0700 root's)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


def find_other_user(shared_gid: int) -> tuple[OtherUser | None, str]:
    """`nobody` (with `shared_gid` as its group) when it can run `mesh`, else None and why."""
    if os.geteuid() != 0:
        return None, "a second uid needs root (run the fuzzer as root for group-shared meshes)"
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None, "no user `nobody` on this machine"
    paths = [str(REPO), *site.getsitepackages()]
    pythonpath = os.pathsep.join(paths)
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in dict.fromkeys([sys.executable, f"/usr/bin/{minor}", f"/usr/local/bin/{minor}"]):
        if not os.path.exists(python):
            continue
        try:
            probe = subprocess.run(
                [python, "-c", "import drasill_cli.cli.app"],
                env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": pythonpath},
                user=uid,
                group=shared_gid,
                extra_groups=[shared_gid],
                capture_output=True,
                check=False,
                cwd="/",
            )
        except OSError:  # that user may not even run it (a folder on the way is private)
            continue
        if probe.returncode == 0:
            return OtherUser(uid, shared_gid, python, pythonpath), ""
    return None, f"no {minor} interpreter that uid {uid} can run with this checkout"


def shared_group() -> int:
    """A group for group-shared meshes: `nogroup` when it exists, else the test's own."""
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return os.getegid()

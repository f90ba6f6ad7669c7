"""The mount harness itself: it must never leave mounts or servers behind."""
import errno
import os
import subprocess

import pytest

from mountutil import CLEANUP_SCRIPT, READY_FILE, MountError, is_mounted, mounted

pytestmark = pytest.mark.fuse


def test_exit_unmounts_and_reaps_the_server():
    with mounted() as m:
        assert os.path.ismount(m.path)
        assert m.read(READY_FILE).strip()
        mnt, proc = m.path, m.proc
    assert not is_mounted(mnt)
    assert not os.path.ismount(mnt)
    assert proc.returncode == 0
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_sigkilled_server_leaves_stale_mount_that_cleanup_script_removes():
    # The harness reports the non-zero exit of the killed server after the body ran.
    with pytest.raises(MountError, match="SIGKILL"):
        with mounted() as m:
            m.proc.kill()
            m.proc.wait(timeout=10)
            assert is_mounted(m.path)
            # Stale: whatever needs the server fails with ENOTCONN. (os.stat of the mount
            # point may still be answered from the kernel's attribute cache.)
            for access in (lambda: os.listdir(m.path), lambda: m.read(READY_FILE)):
                with pytest.raises(OSError) as stale:
                    access()
                assert stale.value.errno == errno.ENOTCONN

            # Restricted to this mount so a session-wide mount of other tests survives.
            subprocess.run(["bash", str(CLEANUP_SCRIPT), str(m.path)], check=True, timeout=60)
            assert not is_mounted(m.path)
            assert os.listdir(m.path) == []

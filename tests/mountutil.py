"""The test suite's mount harness lives in the package (fakeproc.testing.mounting), so
the pytest plugin other projects use and these tests share one implementation."""
from fakeproc.testing.mounting import *  # noqa: F401,F403
from fakeproc.testing.mounting import CLEANUP_SCRIPT, TMP_ROOT, is_mounted, mounted  # noqa: F401

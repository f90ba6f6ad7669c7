"""Property test: random sequences of faults, workload steps, scans, reclaim, migration
and process exits keep the invariant checker (native/check.c) green."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakeproc.machine import load
from kernel_ops import MACHINE, OPS, Interpreter


@settings(max_examples=int(os.environ.get("FAKEPROC_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(swap=st.sampled_from(["0", "4MiB"]), ops=st.lists(OPS, min_size=1, max_size=40))
def test_operations_keep_the_invariants(swap, ops):
    k = load(MACHINE.format(swap=swap))
    run = Interpreter(k)
    for op in ops:
        run.apply(op)
        assert k.check() == [], op

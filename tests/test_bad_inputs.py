"""Bad inputs: every row gets one clear error (or warning) whose message names the fix.

One table per public entry point.  Each row: ``(id, call, expected exception or warning class,
a regular expression the message must match)``.  ``call`` is a zero-argument function building
its own inputs, so rows share no state.  Issue 13, section 3.
"""

from __future__ import annotations

import re

import pytest

# ------------------------------------------------------------------ eNTK engine (empirical_ntk)
NTK_CASES: list = []

# ------------------------------------------------------------------ kernel_distance, linearize, train, Tracker
OTHER_CASES: list = []

CASES = NTK_CASES + OTHER_CASES


@pytest.mark.parametrize("call, expected, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_fix(call, expected, pattern):
    if issubclass(expected, Warning):
        with pytest.warns(expected) as record:
            call()
        assert any(re.search(pattern, str(w.message)) for w in record), [str(w.message) for w in record]
    else:
        with pytest.raises(expected) as info:
            call()
        assert re.search(pattern, str(info.value)), str(info.value)

import os; os.environ.setdefault("OVQUANT_DISABLE_PLUGIN_AUTOLOAD", "1")
# The default times INT8 against FP32 on this host and keeps FP32 where INT8 is slower: on the tests' tiny
# models it often is, so outputs would depend on the host's load. Tests of placement and ranges run with
# the timing off (tests/test_slow_int8.py turns it back on with monkeypatch.delenv).
os.environ.setdefault("OVQUANT_SKIP_SLOW_INT8", "false")
# saturation_fix "auto" depends on this host's ISA (first_layer with VNNI or AMX, measured without): the tests'
# expected placements are first_layer's on every host (tests/test_minmax.py checks "auto" itself).
os.environ.setdefault("OVQUANT_SATURATION_FIX", "first_layer")

import signal  # noqa: E402

import pytest  # noqa: E402

# A suite started as a background job (``cmd &`` in a script) inherits SIGINT ignored, and so would every
# ovquant subprocess of the signal tests; a Python handler here is reset to the default in those children
# (exec), so they see Ctrl-C as a user's shell delivers it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _sigint_as_in_a_fresh_process():
    """Each test starts with the SIGINT handler the session started with: an in-process ``cli.main`` that
    was interrupted leaves SIGINT ignored, and subprocesses started by later tests would inherit that."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)

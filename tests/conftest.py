import os; os.environ.setdefault("OVQUANT_DISABLE_PLUGIN_AUTOLOAD", "1")

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

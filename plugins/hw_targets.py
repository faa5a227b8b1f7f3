"""Built-in hardware targets: every JSON file shipped in ``ovquant/hw_targets``."""
from importlib.resources import files

from ovquant import hookimpl


@hookimpl
def register_hw_targets(register):
    for f in sorted(files("ovquant.hw_targets").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".json"):
            register(f)

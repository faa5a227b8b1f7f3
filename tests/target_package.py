"""What a third-party package's plugin module does to ship a hardware target: register its JSON file."""
from ovquant import hookimpl


class TargetPackage:
    def __init__(self, path):
        self.path = path

    @hookimpl
    def register_hw_targets(self, register):
        register(self.path)

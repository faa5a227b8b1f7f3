"""A calibration progress bar (tqdm), driven by the pipeline event hooks like any other plugin."""
import contextlib
import sys

from .hookspecs import hookimpl
from .registry import register_plugin, unregister_plugin


class ProgressBar:
    """Shows one bar per statistics stage on stderr."""

    def __init__(self):
        self.bar = None

    @hookimpl
    def stage_started(self, stage, algorithms, n_samples):
        from tqdm import tqdm

        if n_samples:
            self.bar = tqdm(total=n_samples, desc=f"stage {stage} ({', '.join(algorithms)})", unit="sample",
                            file=sys.stderr, leave=False, dynamic_ncols=True)

    @hookimpl
    def sample_processed(self, stage, index, n_samples):
        if self.bar is not None:
            self.bar.update(1)

    @hookimpl
    def statistics_collected(self, stage, n_samples, n_statistics, seconds):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(f"stage {stage}: {n_statistics} statistics over {n_samples} samples in {seconds:.1f} s", file=sys.stderr)


@contextlib.contextmanager
def progress_bar(enabled: bool = True):
    if not enabled or not sys.stderr.isatty():
        yield
        return
    plugin = ProgressBar()
    name = register_plugin(plugin, name="ovquant.progress")
    try:
        yield
    finally:
        if plugin.bar is not None:
            plugin.bar.close()
        unregister_plugin(name)

"""Calibration progress on the console, driven by the pipeline event hooks like any other plugin.

On a terminal: one tqdm bar per statistics pass, sized to the terminal, with the sample count, the
rate and the time left. Without one (a CI log, a pipe): one line per pass when it ends.
"""
import contextlib
import sys

from .hookspecs import hookimpl
from .registry import register_plugin, unregister_plugin

#: fits an 80-column terminal: "pass 1  42%|████▏     | 126/300 [00:02<00:03, 58.3 samples/s]"
BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


class ProgressBar:
    """Shows one bar per statistics pass on stderr (``tty``), or a summary line per pass."""

    def __init__(self, tty: bool = True):
        self.tty = tty
        self.bar = None

    @hookimpl
    def stage_started(self, stage, algorithms, n_samples):
        if not self.tty or not n_samples:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=n_samples, desc=f"pass {stage} ", unit=" samples", file=sys.stderr, leave=False,
                        dynamic_ncols=True, bar_format=BAR_FORMAT, mininterval=0.2)

    @hookimpl
    def sample_processed(self, stage, index, n_samples):
        if self.bar is not None:
            self.bar.update(1)

    @hookimpl
    def statistics_collected(self, stage, n_samples, n_statistics, seconds):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not n_samples:
            return
        rate = f", {n_samples / seconds:.0f} samples/s" if seconds > 0 else ""
        print(f"statistics pass {stage}: {n_statistics} statistics over {n_samples} samples in {seconds:.1f} s{rate}",
              file=sys.stderr)


@contextlib.contextmanager
def progress_bar(enabled: bool = True):
    if not enabled:
        yield
        return
    plugin = ProgressBar(tty=sys.stderr.isatty())
    name = register_plugin(plugin, name="ovquant.progress")
    try:
        yield
    finally:
        if plugin.bar is not None:
            plugin.bar.close()
        unregister_plugin(name)

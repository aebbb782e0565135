"""A progress bar for training loops: tqdm on a terminal, a log line every so often elsewhere."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """A tqdm bar on a terminal where tqdm is installed; otherwise (a log file, no tqdm) a line
    every ``interval`` seconds."""

    def __init__(self, total, desc, enabled=True, log=print, interval=30.0):
        self.total, self.desc, self.enabled, self.bar, self.log = total, desc, enabled, None, log
        self.count, self.last_print, self.interval = 0, time.perf_counter(), interval
        if enabled and sys.stdout.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True,
                                mininterval=1.0, file=sys.stdout)
            except ImportError:
                self.bar = None

    def update(self, n, **stats):
        self.count += n
        if not self.enabled:
            return
        text = ", ".join(f"{k}={v}" for k, v in stats.items())
        if self.bar is not None:
            self.bar.update(n)
            now = time.perf_counter()
            if now - self.last_print > 1.0 or self.count == self.total:
                self.bar.set_postfix_str(text, refresh=False)
                self.last_print = now
        elif time.perf_counter() - self.last_print > self.interval or self.count == self.total:
            self.log(f"{self.desc}: {self.count}/{self.total} {text}")
            self.last_print = time.perf_counter()

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.log(line)

    def close(self):
        if self.bar is not None:
            self.bar.close()

"""What a person watching `paintbench train` sees: a bar on a terminal, a plain line every ~5 % in a log
(no carriage returns in CI logs), nothing with `--quiet`. Long work never runs silent."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream: TextIO | None = None,
                 on_update: Callable[[int, int], None] | None = None) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled and total > 0
        self.on_update = on_update   # called on every update (even when quiet): the run folder's status file
        self.stream = stream or sys.stderr
        self.done, self.started = 0, time.perf_counter()
        self.every = max(1, total // 20)
        self.bar = None
        if self.enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=self.stream, unit="step", dynamic_ncols=True)

    def update(self, **postfix: Any) -> None:
        if not self.enabled:
            if self.on_update is not None:
                self.done += 1
                self.on_update(self.done, self.total)
            return
        self.done += 1
        shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in postfix.items()}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            extra = "".join(f"  {k} {v}" for k, v in shown.items())
            elapsed = time.perf_counter() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            print(f"{self.desc} {self.done}/{self.total}{extra}  ({elapsed:.0f} s, ETA {eta:.0f} s)",
                  file=self.stream, flush=True)
        if self.on_update is not None:
            self.on_update(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""`python:module:function`: a user's function `f(prompts, seeds, **options) -> list[image]`.

It also receives `metadata=` (the suite's per-prompt records) and `size=(width, height)` (in that order:
width first) when its signature accepts them. `module` is imported by name, so its folder must be on
`PYTHONPATH` (e.g. `PYTHONPATH=. paintbench eval ... --generator python:mygen:make`)."""

from __future__ import annotations

import importlib
import inspect

from paintbench.errors import UserError
from paintbench.harness.generators.base import GeneratedImage, Generator, Request


class PythonGenerator(Generator):
    kind = "python"

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        if not arg or ":" not in arg:
            raise UserError("python generator needs `python:module:function`")
        module, _, name = arg.partition(":")
        try:
            self.fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"python generator: cannot import {arg} ({e}); is the folder of `{module}` on "
                            "PYTHONPATH? (e.g. PYTHONPATH=. paintbench eval ...)") from e
        self._params = set(inspect.signature(self.fn).parameters)

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        kwargs = dict(self.options)
        if "metadata" in self._params:
            kwargs["metadata"] = [r.item.metadata for r in requests]
        if "size" in self._params:
            kwargs["size"] = (requests[0].width, requests[0].height)
        return list(self.fn([r.item.prompt for r in requests], [r.seed for r in requests], **kwargs))

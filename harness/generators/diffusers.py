"""`diffusers:PATH`: any `DiffusionPipeline` saved in a local folder (never downloaded).

Options (recorded in the run): `steps`, `guidance`, `negative_prompt`, `dtype`, plus any extra keyword
the pipeline's `__call__` accepts. Each image gets its own `torch.Generator` seeded from (run seed,
prompt id, sample index), so images do not depend on batch size or the number of GPUs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from paintbench.errors import UserError
from paintbench.harness.generators.base import GeneratedImage, Generator, Request
from paintbench.metrics.base import resolve_dtype
from paintbench.metrics.remote_code import checked_folder


class DiffusersGenerator(Generator):
    kind = "diffusers"
    batch_size = 4

    def __init__(self, arg, options, suite, *, device="cpu"):
        super().__init__(arg, options, suite, device=device)
        try:
            from diffusers import DiffusionPipeline
        except ImportError as e:
            raise UserError("the diffusers generator needs `pip install diffusers` (extra: paintbench[diffusers])") from e
        if not arg or not Path(arg).expanduser().is_dir():
            raise UserError(f"diffusers generator: {arg!r} is not a local pipeline folder (diffusers:PATH)")
        self.steps = int(self.options.pop("steps", 50))
        self.guidance = float(self.options.pop("guidance", 7.5))
        self.negative_prompt = self.options.pop("negative_prompt", None)
        self.dtype = resolve_dtype(self.options.pop("dtype", "float32"))
        self.extra = dict(self.options)
        self.pipe = DiffusionPipeline.from_pretrained(str(checked_folder(Path(arg).expanduser())),
                                                      torch_dtype=self.dtype, local_files_only=True,
                                                      trust_remote_code=False)
        self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def settings(self):
        return {"generator": self.kind, "arg": str(self.arg), "pipeline": type(self.pipe).__name__,
                "steps": self.steps, "guidance": self.guidance, "negative_prompt": self.negative_prompt,
                "dtype": str(self.dtype).removeprefix("torch."), **self.extra}

    def generate(self, requests: list[Request]) -> list[GeneratedImage]:
        gen_device = "cpu" if self.device == "cpu" else self.device
        generators = [torch.Generator(gen_device).manual_seed(r.seed) for r in requests]
        kwargs = dict(self.extra)
        if self.negative_prompt is not None:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(requests)
        out = self.pipe(prompt=[r.item.prompt for r in requests], num_inference_steps=self.steps,
                        guidance_scale=self.guidance, height=requests[0].height, width=requests[0].width,
                        generator=generators, **kwargs)
        return list(out.images)

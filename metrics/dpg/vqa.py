"""VQA backends for DPG-Bench: one interface, `answer(images, questions) -> list[str]`.

`images[i]` is asked `questions[i]`; backends group entries that share an image object so a tile is
encoded once. Answers are plain strings; the DPG rules (`metrics.dpg.scoring`) decide what counts
as yes. Backends:

- `mplug` (default): the in-repo port of ModelScope's mPLUG-large VQA (`metrics.dpg.mplug`), the
  model behind every published DPG-Bench number. It reads an unmodified ModelScope model folder.
- `blip-vqa` (opt-in): transformers `BlipForQuestionAnswering` (default checkpoint
  `Salesforce/blip-vqa-capfilt-large`) from a local folder or the Hugging Face cache; its generated
  answer string is used as is.
- `qwen-vl` (opt-in): a transformers Qwen-VL chat model (default `Qwen/Qwen2.5-VL-7B-Instruct`)
  asked for a one-word Yes/No answer, greedy; the reply is reduced to `yes`/`no` (`yes_no`).

Only `mplug` numbers are comparable with published DPG-Bench scores. Every result carries its
backend (`label(backend)` is `dpg` for mPLUG and `dpg[vqa=<backend>]` otherwise), and run folders and
answer files record it, so numbers from different backends are never mixed.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

from paintbench.errors import MissingFileError
from paintbench.metrics import weights as wts
from paintbench.metrics.dpg.mplug import MPLUG_WEIGHT, HeadTying, MPlugVQA
from paintbench.metrics.remote_code import checked_folder

DEFAULT_BACKEND = "mplug"
BACKENDS: tuple[str, ...] = ("mplug", "blip-vqa", "qwen-vl")
VQA_MODES: tuple[str, ...] = ("fast", "reference")

def label(backend: str) -> str:
    """The metric label results are reported under: only mPLUG results are plain `dpg`."""
    return "dpg" if backend == "mplug" else f"dpg[vqa={backend}]"


class VQAWeightsError(MissingFileError):
    """The weights of an opt-in VQA backend are not available locally; says where we looked."""

    def __str__(self) -> str:
        return str(self.args[0])


class VQABackend(ABC):
    """Answers questions about images. Subclasses set `name` and `comparable`."""

    name: ClassVar[str]
    comparable: ClassVar[bool] = False  # comparable with published DPG-Bench (mPLUG) numbers

    @abstractmethod
    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        """`images[i]` answers `questions[i]`; one string per question."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Provenance: backend, weights, settings (JSON-serialisable)."""


class HFBackend(VQABackend):
    """A transformers VQA model read from a local folder (`from_pretrained(..., local_files_only=True)`)."""

    def _setup(self, folder: Path, processor_class: Any, device: torch.device | str, max_new_tokens: int,
               batch_size: int) -> None:
        checked_folder(folder)
        require_known_model_type(folder, self.name)
        self.folder = folder
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.processor = processor_class.from_pretrained(str(checked_folder(folder)), local_files_only=True,
                                                         trust_remote_code=False)


def require_known_model_type(folder: Path, what: str) -> None:
    """Refuse, before loading, a model folder whose `model_type` the installed transformers does not know
    (Qwen2.5-VL needs transformers >= 4.49, and the models' own pins, e.g. MMaDA's 4.46, are older), with
    the version and the fix, instead of transformers' own error from deep inside `from_pretrained`."""
    import json

    import transformers
    from transformers import CONFIG_MAPPING

    config = folder / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return  # from_pretrained names a missing or broken config itself
    if model_type and model_type not in CONFIG_MAPPING:
        from paintbench.errors import UserError

        raise UserError(f"{what}: {config} is a {model_type!r} model, which transformers "
                        f"{transformers.__version__} does not know; install a transformers that has it "
                        "(Qwen2.5-VL: >= 4.49; paintbench's tested pin is in constraints/ci.txt)")


def _check_pairs(images: Sequence[Any], questions: Sequence[str]) -> None:
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions")
    for i, q in enumerate(questions):
        if not isinstance(q, str):
            raise TypeError(f"question {i} is {type(q).__name__}, not str")


def _groups(images: Sequence[Any]) -> list[list[int]]:
    out: dict[int, list[int]] = {}
    for i, im in enumerate(images):
        out.setdefault(id(im), []).append(i)
    return list(out.values())


# -------------------------------------------------------------------------------------------- mPLUG
class MPlugBackend(VQABackend):
    name = "mplug"
    comparable = True

    def __init__(self, vqa: MPlugVQA, folder: Path) -> None:
        self.vqa = vqa
        self.folder = folder

    @classmethod
    def load(
        cls,
        weights: str | os.PathLike[str] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        vqa_mode: str = "fast",
        trust_pickle: bool = False,
        head_tying: HeadTying = "strict",
    ) -> MPlugBackend:
        folder = wts.resolve(MPLUG_WEIGHT, explicit=weights, weights_dir=weights_dir)
        vqa = MPlugVQA.from_folder(folder, device=device, dtype=dtype, mode=vqa_mode,  # type: ignore[arg-type]
                                   trust_pickle=trust_pickle, head_tying=head_tying)
        return cls(vqa, folder)

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        _check_pairs(images, questions)
        return self.vqa.answer(images, questions)

    def describe(self) -> dict[str, Any]:
        d = self.vqa.describe()
        ck = Path(self.vqa.report.checkpoint) if self.vqa.report else None
        d["checkpoint_sha256"] = wts.fingerprint(ck) if ck else None
        d["path"] = str(self.folder)  # the model folder (synthetic weights are recognised by it)
        d["comparable_with_published_dpg"] = True
        return d


# -------------------------------------------------------------------------------------------- HF models
def resolve_hf_folder(
    weights: str | os.PathLike[str] | None,
    weights_dir: str | os.PathLike[str] | None,
    repo: str,
    what: str,
) -> Path:
    """A local transformers model folder: an explicit folder, `<weights dir>/<repo name>`, or the
    Hugging Face cache (offline). Raises VQAWeightsError naming every place searched."""
    searched = []
    if weights is not None:
        p = Path(weights).expanduser()
        if p.is_dir():
            return p
        if not p.exists() and "/" in str(weights) and not str(weights).startswith((".", "/", "~")):
            repo = str(weights)  # a Hugging Face repo id
        else:
            raise VQAWeightsError(f"{what}: {p} is not a model folder")
    directory = Path(weights_dir).expanduser() if weights_dir is not None else wts.default_weights_dir()
    candidate = directory / repo.split("/")[-1]
    if candidate.is_dir():
        return candidate
    searched.append(f"weights directory: {candidate}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:
        searched.append(f"Hugging Face cache: {repo}")
    places = "\n".join(f"  - {s}" for s in searched)
    raise VQAWeightsError(
        f"{what} weights ({repo}) not found. Searched:\n{places}\nDownload the model folder (e.g. "
        f"`huggingface-cli download {repo} --local-dir {candidate}`) or pass its folder as the backend weights."
    )


def _model_dtype(dtype: torch.dtype) -> dict[str, Any]:
    """`from_pretrained`'s precision argument: `dtype` since transformers 4.56, `torch_dtype` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


class BlipVQABackend(HFBackend):
    """transformers BLIP VQA. Not comparable with published DPG-Bench numbers (a different model)."""

    name = "blip-vqa"
    default_repo = "Salesforce/blip-vqa-capfilt-large"

    def __init__(self, folder: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 max_new_tokens: int = 10, batch_size: int = 16) -> None:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self._setup(folder, BlipProcessor, device, max_new_tokens, batch_size)
        self.model = BlipForQuestionAnswering.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                              **_model_dtype(dtype))
        self.model.to(self.device).eval()

    @classmethod
    def load(cls, weights=None, weights_dir=None, **kw: Any) -> BlipVQABackend:
        return cls(resolve_hf_folder(weights, weights_dir, cls.default_repo, "blip-vqa"), **kw)

    @torch.inference_mode()
    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        _check_pairs(images, questions)
        out: list[str] = []
        for start in range(0, len(questions), self.batch_size):
            ims = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            qs = list(questions[start : start + self.batch_size])
            inputs = self.processor(images=ims, text=qs, return_tensors="pt", padding=True).to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            out.extend(s.strip() for s in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "folder": str(self.folder), "model": type(self.model).__name__,
                "dtype": str(self.model.dtype).removeprefix("torch."), "max_new_tokens": self.max_new_tokens,
                "answer": "generated string as is", "comparable_with_published_dpg": False}


_YES_NO = re.compile(r"[a-z]+")


def yes_no(reply: str) -> str:
    """A chat model's reply reduced to `yes`/`no` by its first word (case and punctuation ignored);
    any other reply is returned lower-cased and stripped, so it counts as not-yes and stays visible."""
    m = _YES_NO.search(reply.lower())
    word = m.group(0) if m else ""
    return word if word in ("yes", "no") else reply.strip().lower()


class QwenVLBackend(HFBackend):
    """A Qwen-VL chat model (transformers `AutoModelForImageTextToText`) answering Yes/No, greedy.
    Not comparable with published DPG-Bench numbers; the prompt is recorded in `describe()`."""

    name = "qwen-vl"
    default_repo = "Qwen/Qwen2.5-VL-7B-Instruct"
    prompt = "{question} Please answer the question with only one word: 'Yes' or 'No'."

    def __init__(self, folder: Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 max_new_tokens: int = 4, batch_size: int = 8) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._setup(folder, AutoProcessor, device, max_new_tokens, batch_size)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # generation continues every row from its end
        self.model = AutoModelForImageTextToText.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                                                 **_model_dtype(dtype))
        self.model.to(self.device).eval()

    @classmethod
    def load(cls, weights=None, weights_dir=None, **kw: Any) -> QwenVLBackend:
        return cls(resolve_hf_folder(weights, weights_dir, cls.default_repo, "qwen-vl"), **kw)

    def chat_text(self, question: str) -> str:
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": self.prompt.format(question=question)}]}]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        _check_pairs(images, questions)
        out: list[str] = []
        for start in range(0, len(questions), self.batch_size):
            ims = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            texts = [self.chat_text(q) for q in questions[start : start + self.batch_size]]
            inputs = self.processor(text=texts, images=ims, return_tensors="pt", padding=True).to(self.device)
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = ids[:, inputs["input_ids"].shape[1]:]
            out.extend(yes_no(s) for s in self.processor.batch_decode(new, skip_special_tokens=True))
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "folder": str(self.folder), "model": type(self.model).__name__,
                "dtype": str(self.model.dtype).removeprefix("torch."), "prompt": self.prompt,
                "decoding": f"greedy, max_new_tokens={self.max_new_tokens}", "answer": "first word yes/no",
                "comparable_with_published_dpg": False}


def make_backend(
    name: str = DEFAULT_BACKEND,
    *,
    weights: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    vqa_mode: str = "fast",
    trust_pickle: bool = False,
    head_tying: HeadTying = "strict",
) -> VQABackend:
    """Build a VQA backend by name (see the module docstring). `vqa_mode` and the pickle/head options
    apply to mPLUG only."""
    if name not in BACKENDS:
        raise ValueError(f"unknown VQA backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if vqa_mode not in VQA_MODES:
        raise ValueError(f"vqa_mode must be one of {', '.join(VQA_MODES)}, got {vqa_mode!r}")
    if name == "mplug":
        return MPlugBackend.load(weights, weights_dir, device=device, dtype=dtype, vqa_mode=vqa_mode,
                                 trust_pickle=trust_pickle, head_tying=head_tying)
    if name == "blip-vqa":
        return BlipVQABackend.load(weights, weights_dir, device=device, dtype=dtype)
    return QwenVLBackend.load(weights, weights_dir, device=device, dtype=dtype)

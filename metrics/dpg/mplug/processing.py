"""Pre- and post-processing: the question tokenizer, answer decoding, and the image transform."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from paintbench.metrics.dpg.mplug.configuration import (
    CLIP_MEAN,
    CLIP_STD,
    END_ID,
    QUESTION_MAX_TOKENS,
    START_ID,
    MPlugLoadError,
)
from paintbench.metrics.remote_code import checked_folder

# ------------------------------------------------------------------------------------------- text
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))  # fmt: skip


def decode(tokens: Sequence[str], special: set[str]) -> str:
    """transformers 4.x `BertTokenizer.decode(ids, skip_special_tokens=True)` on the tokens of ids:
    special tokens dropped, word pieces joined, then `clean_up_tokenization` (4.x's BERT default).
    Done here so the answer strings do not depend on the installed transformers version (5.x's
    tokenizer does not clean up spaces by default)."""
    text = " ".join(t for t in tokens if t not in special).replace(" ##", "").strip()
    for a, b in _CLEANUPS:
        text = text.replace(a, b)
    return text


class QuestionTokenizer:
    """BERT word pieces from the model folder's vocab.txt (MPlugPreprocessor's tokenizer)."""

    def __init__(self, folder: str | os.PathLike[str], max_tokens: int = QUESTION_MAX_TOKENS) -> None:
        from transformers import BertTokenizer

        folder = Path(folder)
        if not (folder / "vocab.txt").is_file():
            raise MPlugLoadError(f"{folder}: no vocab.txt")
        self.max_tokens = max_tokens
        self.tok = BertTokenizer.from_pretrained(str(checked_folder(folder)), local_files_only=True,
                                                 trust_remote_code=False)
        self.special = set(self.tok.all_special_tokens)
        vocab = self.tok.get_vocab()
        if vocab.get("[CLS]") != START_ID or vocab.get("[SEP]") != END_ID:
            raise MPlugLoadError(
                f"{folder}/vocab.txt: [CLS]/[SEP] must have ids {START_ID}/{END_ID} (the official generator's"
                f" start and end ids), got {vocab.get('[CLS]')}/{vocab.get('[SEP]')}"
            )
        self.vocab_size = len(vocab)

    def __call__(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-cased questions → (input_ids, attention_mask), each [Q, 25] (padded/truncated)."""
        enc = self.tok(
            [q.lower() for q in questions],
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
        )
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        mask = torch.tensor(enc["attention_mask"], dtype=torch.long)
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return decode(self.tok.convert_ids_to_tokens(list(ids)), self.special)


# ------------------------------------------------------------------------------------------- images
def preprocess(image: Image.Image, image_res: int) -> torch.Tensor:
    """MPlugPreprocessor's transform: convert("RGB"), PIL bicubic resize to image_res × image_res
    (torchvision `Resize((r, r), BICUBIC)` on a PIL image is exactly this), ToTensor, CLIP Normalize.
    Returns float32 [3, r, r]."""
    img = image.convert("RGB").resize((image_res, image_res), Image.BICUBIC)
    arr = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
    x = arr.to(torch.float32).div(255)
    mean = torch.as_tensor(CLIP_MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(CLIP_STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub(mean).div(std)

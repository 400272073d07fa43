"""mPLUG-large VQA, the answer model of DPG-Bench, as a self-contained torch port.

DPG-Bench asks every question of a prompt's table about every tile of its 2×2 grid with ModelScope's
`damo/mplug_visual-question-answering_coco_large_en` pipeline. That pipeline cannot be a dependency:
it imports fairseq, torchaudio, librosa, OFA and needs transformers < 5 (shared/reference/dpg_vqa.md).
This module re-implements only the VQA inference path, reads an **unmodified ModelScope model folder**
(`pytorch_model.bin`, `config.yaml`, `config_bert.json`, `vocab.txt`), and mirrors the official
operations in the official order so that, in reference mode, the numbers are the official ones:

- image: `convert("RGB")`, PIL bicubic squash of the tile to `image_res`² (config.yaml, 504 for the
  released model), `ToTensor`, CLIP mean/std (`preprocess`);
- question: lower-cased, BERT word pieces, padded/truncated to 25 tokens (`[CLS]` + 23 + `[SEP]`);
- CLIP ViT (all tokens after `ln_post`, no projection) → `visn_fc` → `visn_layer_norm`;
- BERT text encoder (`text_encoder_layers`), then the fusion encoder: only its last `fusion_layers`
  layers run; layer n (counted from the first that runs) with n ≠ 0 and n % `stride_layer` == 0 does
  joint self-attention over [image; text] and adds the new image part to the image states (the
  "skip connection"), every other layer does text self-attention → cross-attention to the image → FFN;
- BERT answer decoder (`text_decode_layers`, cross-attention to [fused image; fused question]);
- beam search exactly as ModelScope's `TextGenerator._fast_translate_batch` (`beam_search`): beam 5,
  min length 1, max length 10, length penalty ((5 + step + 1) / 6) ** 0.6, start id 101, end id 102;
- the best hypothesis decoded with special tokens skipped (`decode`), as transformers 4.x does.

Masks follow the official code: self-attention masks are `(1 - m) * -10000`, cross-attention masks
`(1 - m) * finfo.min` (transformers 4.x `invert_attention_mask`), the decoder's causal mask has no
padding. Dropout is a no-op (eval).

Two execution modes (`MPlugVQA(mode=...)`):

- `"reference"`: each question alone, batch 1 × 5 beams, the decoder re-run on the whole prefix with
  the memory re-projected at every step, fp32: the official computation, op for op. The tile is
  encoded once and its embeddings reused (the ViT pass is deterministic, so this is bitwise the
  same as re-encoding per question, which `reencode_image=True` does, like the official pipeline).
- `"fast"`: all questions of a tile in one batch; the image part of every cross-attention is
  projected once per tile and shared by all questions, beams and steps (while no skip layer has
  made it question-specific); the question part once per question; logits only for the last
  position. The same mathematics, so answers agree with reference mode up to float rounding
  (checked in tests; a near-tie between two beams is the only way they can differ).

Loading (`load_mplug`): `metrics.weights.load_state_dict` first (no pickled code runs); a checkpoint
that needs a full unpickle loads only with `trust_pickle=True`. The loader fails loudly when
config.yaml and the checkpoint disagree (positional embeddings vs `image_res`, layer counts, widths)
and when the answer head is untied (see `HEAD_TYING`).

Attribution: the architecture, parameter names, masks and beam-search rules are those of ModelScope's
mPLUG (modelscope/models/multi_modal/mplug: modeling_mplug.py, clip/clip.py, predictor.py; Apache-2.0,
Alibaba DAMO Academy, building on OpenAI CLIP and HuggingFace BERT). This file is a re-implementation
written for paintbench, not a copy.

The package, by concern (as transformers lays out a model): `configuration` (settings and constants),
`modeling` (the modules), `generation` (beam search), `processing` (tokenizer, answers, images),
`conversion` (checkpoint loading and checks), `inference` (`MPlugVQA`), `tiny` (test folders).
"""

from paintbench.metrics.dpg.mplug.configuration import (
    CHECKPOINT_FILES,
    CLIP_MEAN,
    CLIP_STD,
    END_ID,
    FOLDER_FILES,
    HEAD_TYING,
    LENGTH_PENALTY_ALPHA,
    MODES,
    QUESTION_MAX_TOKENS,
    REQUIRED_FILES,
    START_ID,
    BertSettings,
    HeadTying,
    Mode,
    MPlugLoadError,
    MPlugSettings,
    read_settings,
)
from paintbench.metrics.dpg.mplug.conversion import (
    LoadReport,
    checkpoint_path,
    load_mplug,
    read_checkpoint,
    save_safetensors,
    unwrap,
)
from paintbench.metrics.dpg.mplug.generation import Hypothesis, StepFn, beam_search, length_penalty
from paintbench.metrics.dpg.mplug.inference import MPlugVQA, VQAResult
from paintbench.metrics.dpg.mplug.modeling import (
    BertAttention,
    BertEmbeddings,
    BertFeedForward,
    BertLayer,
    BertSelfAttention,
    BertSelfOutput,
    BertStack,
    FusionLayer,
    FusionModel,
    LMHead,
    MPlugForVQA,
    QuickGELU,
    ResidualAttentionBlock,
    TextDecoder,
    VisionTransformer,
)
from paintbench.metrics.dpg.mplug.processing import QuestionTokenizer, decode, preprocess
from paintbench.metrics.dpg.mplug.tiny import (
    MPLUG_FOLDER,
    MPLUG_WEIGHT,
    TINY_BERT,
    TINY_CONFIG,
    TINY_WORDS,
    tiny_state_dict,
    tiny_vocab,
    write_tiny_mplug,
    write_tiny_weights,
)

__all__ = [
    "CHECKPOINT_FILES",
    "CLIP_MEAN",
    "CLIP_STD",
    "END_ID",
    "FOLDER_FILES",
    "HEAD_TYING",
    "LENGTH_PENALTY_ALPHA",
    "MODES",
    "MPLUG_FOLDER",
    "MPLUG_WEIGHT",
    "QUESTION_MAX_TOKENS",
    "REQUIRED_FILES",
    "START_ID",
    "TINY_BERT",
    "TINY_CONFIG",
    "TINY_WORDS",
    "BertAttention",
    "BertEmbeddings",
    "BertFeedForward",
    "BertLayer",
    "BertSelfAttention",
    "BertSelfOutput",
    "BertSettings",
    "BertStack",
    "FusionLayer",
    "FusionModel",
    "HeadTying",
    "Hypothesis",
    "LMHead",
    "LoadReport",
    "MPlugForVQA",
    "MPlugLoadError",
    "MPlugSettings",
    "MPlugVQA",
    "Mode",
    "QuestionTokenizer",
    "QuickGELU",
    "ResidualAttentionBlock",
    "StepFn",
    "TextDecoder",
    "VQAResult",
    "VisionTransformer",
    "beam_search",
    "checkpoint_path",
    "decode",
    "length_penalty",
    "load_mplug",
    "preprocess",
    "read_checkpoint",
    "read_settings",
    "save_safetensors",
    "tiny_state_dict",
    "tiny_vocab",
    "unwrap",
    "write_tiny_mplug",
    "write_tiny_weights",
]

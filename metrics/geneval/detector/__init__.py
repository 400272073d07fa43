"""GenEval's object detector, Mask2Former Swin-S (COCO instance), without compiled extensions.

GenEval runs mmdet 2.x's `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco` through `inference_detector`,
which needs a CUDA build of mmcv. Here the same network is transformers'
`Mask2FormerForUniversalSegmentation` (pure PyTorch: the deformable attention is `grid_sample`), and the
official checkpoint is loaded into it by a key map. Around the model sit mmdet's own pre- and
post-processing, rewritten in torch so that a whole batch stays on the device:

- preprocessing (mmdet 2.x test pipeline of that config): keep-ratio resize into 1333×800 (mmcv's
  `rescale_size` rounding) by OpenCV's own uint8 bilinear resize (`cv2.resize`, as mmcv's `imresize`
  calls it: fixed-point, which no float interpolation reproduces); pad bottom/right to a multiple of 32
  with the value 128 (the config pads *before* Normalize); then ImageNet mean/std on the 0-255 scale,
  in RGB order, as mmcv's `imnormalize` (subtract the mean, multiply by 1/std). GenEval images are
  square, and 512² and 1024² inputs become 800×800;
- post-processing (`MaskFormerFusionHead.instance_postprocess`): class probabilities are the softmax
  without the no-object column; the top 100 (query, class) pairs over the flattened matrix are kept;
  each pair's mask logits are upsampled bilinearly to the padded input, cropped to the resized image,
  resized bilinearly to the original size, and only then thresholded at 0; the score is
  class probability × mean sigmoid over the mask pixels; the box is the tight box of the mask,
  `[x0, y0, x1 + 1, y1 + 1]`. HF's own `post_process_instance_segmentation` differs on all of these
  (fixed 384² resize, nearest upsampling of binarised masks, no boxes), so it is not used.

Checkpoints accepted (the format is recognised from the keys):

- `mmdet2`: the official GenEval file `mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth` (mmdet v2.0
  release `..._20220504_001756-743b7d99.pth`), keys named after mmcv 1.x `BaseTransformerLayer`
  (`attentions.0`, `ffns.0`);
- `mmdet3`: mmdet's v3.0 re-keyed copy of the same run (`..._20220504_001756-c9d0c4f2.pth`), which
  GenEval's download script fetched before 2024-07;
- `hf`: a transformers folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), e.g.
  `facebook/mask2former-swin-small-coco-instance`. That is a conversion of Meta's Detectron2 training,
  not GenEval's checkpoint: same architecture and class order, different weights, so scores differ.

The architecture of an mmdet checkpoint is read off its tensor shapes (depths, widths, heads, window,
queries, layers), so the tiny random checkpoints the tests write in each format go through exactly the
code the real file does. Class index i is GenEval's `object_names.txt` line i: the COCO order with
"computer mouse", "tv remote" and "computer keyboard" for COCO's mouse, remote and keyboard.

The package, by concern (as transformers lays out a model): `configuration` (class names, architecture,
building the model), `conversion` (checkpoint key maps), `checkpoint` (reading and writing files),
`processing` (mmdet's pre- and post-processing), `modeling` (the detector), `mmdet_backend` (mmdet
itself, optional)."""

from paintbench.metrics.geneval.detector.checkpoint import (
    LoadedDetector,
    is_hf_folder,
    load_detector,
    random_tiny_model,
    read_checkpoint,
    save_checkpoint,
)
from paintbench.metrics.geneval.detector.configuration import (
    COCO_NAMES,
    GENEVAL_SPELLINGS,
    MMDET_MEAN,
    MMDET_STD,
    OBJECT_NAMES,
    SWIN_S_CONFIG,
    TINY_CONFIG,
    DetectorConfig,
    build_model,
    config_from_hf,
    config_from_mmdet,
    hf_config,
)
from paintbench.metrics.geneval.detector.conversion import (
    CheckpointFormat,
    checkpoint_format,
    hf5_names,
    hf_to_mmdet3,
    load_mapped,
    merge_hf_to_mmdet,
    merge_mmdet_to_hf,
    mmdet2_to_mmdet3,
    mmdet3_to_hf,
    mmdet3_to_mmdet2,
    mmdet_relative_position_index,
)
from paintbench.metrics.geneval.detector.mmdet_backend import (
    MmdetDetector,
    default_mmdet_config,
    mmdet_available,
)
from paintbench.metrics.geneval.detector.modeling import ImagesIn, Mask2FormerDetector
from paintbench.metrics.geneval.detector.processing import (
    InstanceResult,
    instance_postprocess,
    masks_to_boxes,
    padded_size,
    preprocess,
    rescale_size,
    resize_uint8,
    to_uint8_batch,
)

__all__ = [
    "COCO_NAMES",
    "GENEVAL_SPELLINGS",
    "MMDET_MEAN",
    "MMDET_STD",
    "OBJECT_NAMES",
    "SWIN_S_CONFIG",
    "TINY_CONFIG",
    "CheckpointFormat",
    "DetectorConfig",
    "ImagesIn",
    "InstanceResult",
    "LoadedDetector",
    "Mask2FormerDetector",
    "MmdetDetector",
    "build_model",
    "checkpoint_format",
    "config_from_hf",
    "config_from_mmdet",
    "default_mmdet_config",
    "hf5_names",
    "hf_config",
    "hf_to_mmdet3",
    "instance_postprocess",
    "is_hf_folder",
    "load_detector",
    "load_mapped",
    "masks_to_boxes",
    "merge_hf_to_mmdet",
    "merge_mmdet_to_hf",
    "mmdet2_to_mmdet3",
    "mmdet3_to_hf",
    "mmdet3_to_mmdet2",
    "mmdet_available",
    "mmdet_relative_position_index",
    "padded_size",
    "preprocess",
    "random_tiny_model",
    "read_checkpoint",
    "rescale_size",
    "resize_uint8",
    "save_checkpoint",
    "to_uint8_batch",
]

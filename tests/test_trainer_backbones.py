"""MMaDA and Lumina-DiMOO adapters: token layout, logit slicing, CFG, decoding, LoRA and the reference,
checked with small stand-in modules that honour the real models' forward signatures
(`model(input_ids, attention_bias=...)` for MMaDA, `model(input_ids, infer=True)` for DiMOO). The 8B
models themselves are not run here (no weights); the layout constants are checked against htgrpo.md."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from paintbench.trainer.estimator import EstimatorBatch, token_logps
from paintbench.trainer.policies.dimoo import (
    DiMOOLayout,
    DiMOOPolicy,
    image_block,
    image_positions,
    raw_prompt,
)
from paintbench.trainer.policies.mmada import MMaDALayout, MMaDAPolicy, t2i_inputs, text_part
from paintbench.trainer.policy import MASK
from paintbench.trainer.sampling import SamplerOptions, make_generators, rollout

pytestmark = pytest.mark.hf


class StandInLM(nn.Module):
    """A tiny bidirectional LM over a full vocabulary: token + position embeddings, one context-mixing
    layer that respects the attention mask, a head over the whole vocabulary."""

    def __init__(self, vocab: int, d: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(512, d)
        self.mix = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, input_ids, attention_bias=None, infer=None):
        x = self.emb(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        keep = torch.ones(input_ids.shape, dtype=torch.bool) if attention_bias is None else attention_bias[:, 0, -1, :]
        ctx = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        return SimpleNamespace(logits=self.head(torch.tanh(self.mix(x + ctx[:, None]))))


class WordIds:
    """Stand-in tokenizer: words → ids 1..20 (a leading BOS id, as HF tokenizers often add)."""

    def __init__(self, bos: int | None = None) -> None:
        self.bos = bos

    def __call__(self, texts):
        out = []
        for t in texts:
            ids = [1 + sum(map(ord, w)) % 20 for w in t.split()]
            out.append(([self.bos] if self.bos is not None else []) + ids)
        return {"input_ids": out}


class StandInMAGVIT(nn.Module):
    def decode_code(self, codes):               # [-1, 1] images, 4 px per code
        v = codes.float() / 7.5 - 1.0
        b = codes.shape[0]
        return v.view(b, 1, 2, 3).repeat_interleave(4, 2).repeat_interleave(4, 3).expand(b, 3, 8, 12)


class StandInVQModel(nn.Module):
    config = SimpleNamespace(latent_channels=4)

    def decode(self, latents, force_not_quantize=True, shape=None):
        assert force_not_quantize and shape == (latents.shape[0], 2, 3, 4)
        v = latents.float() / 15.0                                   # [0, 1]
        return SimpleNamespace(sample=v[:, None].repeat_interleave(4, 2).repeat_interleave(4, 3).expand(-1, 3, -1, -1))


M_LAYOUT = MMaDALayout(codebook_size=16, grid=(2, 3), image_size=(8, 12), mask_id=90, code_offset=100, text_len=8,
                       t2i_id=91, soi_id=92, eoi_id=93, bos_id=94, eos_id=95, pad_id=96)
D_LAYOUT = DiMOOLayout(codebook_size=16, grid=(2, 3), image_size=(8, 12), mask_id=90, code_offset=100, newline_id=80,
                       boi_id=81, eoi_id=82, boa_id=83, eoa_id=84)
CANVAS = torch.tensor([[MASK, 3, 4, MASK, 0, 15], [1, 2, 3, 4, 5, 6]])


def test_published_layout_constants():
    m, d = MMaDALayout(), DiMOOLayout()
    assert (m.mask_id, m.code_offset, m.codebook_size, m.num_image_tokens, m.soi_id, m.eoi_id) == \
        (126336, 126349, 8192, 1024, 126084, 126085)
    assert (d.mask_id, d.code_offset, d.newline_id, d.boi_id, d.eoi_id, d.boa_id, d.eoa_id) == \
        (126336, 126356, 126084, 126349, 126350, 126354, 126355)
    assert d.block_len == 4 + 32 * 33


# -- MMaDA ----------------------------------------------------------------------------------------------


def test_mmada_sequence_layout():
    ids, mask = t2i_inputs(M_LAYOUT, [[5, 6], [94, 7, 95]], CANVAS)
    assert ids[0].tolist() == [96, 96, 96, 91, 94, 5, 6, 95, 92, 90, 103, 104, 90, 100, 115, 93]
    assert mask[0].tolist() == [0, 0, 0] + [1] * 13
    assert ids[1, :8].tolist() == [96, 96, 96, 91, 94, 7, 95, 95]      # a given BOS is not doubled; an EOS is
    # (as MMaDA's t2i_gen_prompt does: it appends <eos> to whatever the tokenizer gave)
    long_ids, long_mask = text_part(M_LAYOUT, list(range(1, 20)))
    assert len(long_ids) == 8 and long_ids[:2] == [91, 94] and long_ids[-1] == 95 and all(long_mask)


def mmada_policy(lora=False):
    policy = MMaDAPolicy(StandInLM(116), WordIds(bos=94), StandInMAGVIT(), layout=M_LAYOUT)
    if lora:
        policy.add_lora(rank=4, alpha=8, dropout=0.0, targets=["mix", "head"])
    return policy


def test_mmada_logits_are_the_image_slice_and_cfg_uses_the_empty_prompt():
    policy = mmada_policy()
    prompts = policy.encode_prompts(["red circle", "two blue squares"])
    got = policy.image_logits(prompts, CANVAS)
    ids, mask = t2i_inputs(M_LAYOUT, [[94, *x] for x in WordIds()(["red circle", "two blue squares"])["input_ids"]], CANVAS)
    bias = (mask[:, :, None] & mask[:, None, :]).bool().unsqueeze(1)
    full = policy.model(ids, attention_bias=bias).logits
    assert got.shape == (2, 6, 16)
    assert torch.equal(got, full[:, 8 + 1:8 + 1 + 6, 100:116])
    uids, umask = t2i_inputs(M_LAYOUT, [[], []], CANVAS)
    ubias = (umask[:, :, None] & umask[:, None, :]).bool().unsqueeze(1)
    uncond = policy.model(uids, attention_bias=ubias).logits[:, 9:15, 100:116]
    assert torch.allclose(policy.image_logits(prompts, CANVAS, cfg_scale=3.5), 4.5 * got - 3.5 * uncond, atol=1e-5)


def test_mmada_decode_and_core_rollout():
    policy = mmada_policy()
    img = policy.decode(torch.tensor([[0, 15, 8, 4, 2, 1]]))
    assert img.dtype == torch.uint8 and img.shape == (1, 3, 8, 12)
    assert img[0, 0, 0, 0] == 0 and img[0, 0, 0, 4] == 255            # code 0 → -1 → 0; 15 → 1 → 255
    r = rollout(policy, policy.encode_prompts(["a", "b c"]), make_generators([1, 2]), SamplerOptions(steps=3, cfg_scale=1.0))
    assert ((r.codes >= 0) & (r.codes < 16)).all() and (r.commit_step <= 2).all()


def test_mmada_lora_trains_only_the_adapter_and_reference_is_the_base():
    pytest.importorskip("peft")
    policy = mmada_policy(lora=True)
    trainable = policy.trainable_parameters()
    names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in names)
    base = policy.image_logits(policy.encode_prompts(["x y"]), CANVAS[:1]).detach()
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    ref = policy.make_reference()
    prompts = policy.encode_prompts(["x y"])
    assert torch.allclose(ref.image_logits(prompts, CANVAS[:1]), base, atol=1e-6)
    assert not torch.allclose(policy.image_logits(prompts, CANVAS[:1]), base, atol=1e-3)
    # the full-mask estimator's gradient reaches the adapter only
    est = EstimatorBatch(prompts, torch.tensor([0, 0]), torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 1, 1]]))
    token_logps(policy, est).sum().backward()
    assert all(p.grad is not None for p in trainable)
    assert all(p.grad is None for p in policy.model.parameters() if not p.requires_grad)
    # the checkpoint holds only the adapter, and loading it restores the adapted logits
    state = policy.policy_state()
    assert state and all(k.startswith("lora.") for k in state)
    fresh = mmada_policy(lora=True)
    fresh.load_policy_state(state)
    assert torch.allclose(fresh.image_logits(prompts, CANVAS[:1]), policy.image_logits(prompts, CANVAS[:1]), atol=1e-6)
    assert not policy.reference_is_copy


# -- Lumina-DiMOO -------------------------------------------------------------------------------------------


def test_dimoo_image_block_and_positions():
    block = image_block(D_LAYOUT, CANVAS)
    assert block[0].tolist() == [83, 81, 90, 103, 104, 80, 90, 100, 115, 80, 82, 84]
    assert len(block[0]) == D_LAYOUT.block_len
    assert image_positions(D_LAYOUT, 4).tolist() == [6, 7, 8, 10, 11, 12]
    seq = torch.cat([torch.zeros(2, 4, dtype=torch.long), block], dim=1)
    cells = seq[:, image_positions(D_LAYOUT, 4)]
    assert torch.equal(cells, torch.where(CANVAS == MASK, torch.full_like(CANVAS, 90), CANVAS + 100))


def dimoo_policy():
    return DiMOOPolicy(StandInLM(116), WordIds(), StandInVQModel(), layout=D_LAYOUT,
                       prompt_builder=lambda t: (f"<sys> {t}", "<sys>"))


def test_dimoo_logits_group_prompts_by_length_and_cfg_uses_the_uncond_prompt():
    policy = dimoo_policy()
    texts = ["red circle", "a photo of two blue squares"]               # different token lengths
    prompts = policy.encode_prompts(texts)
    got = policy.image_logits(prompts, CANVAS)
    tok = WordIds()
    for i, t in enumerate(texts):
        p = torch.tensor(tok([f"<sys> {t}"])["input_ids"][0])
        ids = torch.cat([p, image_block(D_LAYOUT, CANVAS[i:i + 1])[0]])[None]
        want = policy.model(ids, infer=True).logits[0, image_positions(D_LAYOUT, len(p)), 100:116]
        assert torch.allclose(got[i], want, atol=1e-6)
    u = torch.tensor(tok(["<sys>"])["input_ids"][0])
    ids = torch.cat([u.expand(2, -1), image_block(D_LAYOUT, CANVAS)], dim=1)
    uncond = policy.model(ids, infer=True).logits[:, image_positions(D_LAYOUT, len(u)), 100:116]
    assert torch.allclose(policy.image_logits(prompts, CANVAS, cfg_scale=4.0), 5 * got - 4 * uncond, atol=1e-5)


def test_dimoo_decode_and_core_rollout_and_lora():
    policy = dimoo_policy()
    img = policy.decode(torch.tensor([[0, 15, 8, 4, 2, 1]]))
    assert img.shape == (1, 3, 8, 12) and img[0, 0, 0, 0] == 0 and img[0, 0, 0, 4] == 255
    r = rollout(policy, policy.encode_prompts(["a", "b c d"]), make_generators([1, 2]),
                SamplerOptions(steps=3, cfg_scale=2.0, temperature_mode="constant"))
    assert ((r.codes >= 0) & (r.codes < 16)).all()
    pytest.importorskip("peft")
    policy.add_lora(rank=2, alpha=4, dropout=0.0, targets=["mix"])
    est = EstimatorBatch(policy.encode_prompts(["a"]), torch.tensor([0]), r.codes[:1])
    token_logps(policy, est).sum().backward()
    assert all(p.grad is not None for p in policy.trainable_parameters())


def _vendored_prompting():
    import importlib.util

    from tests.shared_data import SHARED, require

    f = require(SHARED / "vendor" / "mmada" / "training" / "prompting_utils.py")
    spec = importlib.util.spec_from_file_location("mmada_prompting_utils", f)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mmada_layout_defaults_are_mmadas_own(capsys):
    """text_len was 128 (MMaDA: max_seq_length 512 + 1 = 513) and the pad id 126081 (MMaDA: [iPAD] 126093)."""
    pu = _vendored_prompting()

    class Tok:  # what UniversalPrompting reads of a tokenizer with use_reserved_token=True
        bos_token_id, eos_token_id = 126080, 126081

        def convert_tokens_to_ids(self, tokens):
            return [126090 for _ in tokens]

    up = pu.UniversalPrompting(Tok(), max_text_len=512, use_reserved_token=True)
    capsys.readouterr()  # it prints its ids
    lay = MMaDALayout()
    assert lay.text_len == up.max_text_len == 513 and lay.pad_id == up.pad_id == 126093
    ids = pu.reserved_token_mapping
    assert (lay.t2i_id, lay.soi_id, lay.eoi_id) == (ids["<|t2i|>"], ids["<|soi|>"], ids["<|eoi|>"])
    # the text part as t2i_gen_prompt builds it: [iPAD]* <|t2i|> <bos> text <eos>, left-padded to 513
    image = torch.full((1, 4), 126336)
    for text in ([Tok.bos_token_id, 5, 6, 7], [5, 6, 7], [], [Tok.bos_token_id, 5, Tok.eos_token_id], list(range(600))):
        row, mask = text_part(lay, text)
        official_ids, official_masks = up.t2i_gen_prompt([list(text)], image)
        assert row == official_ids[0, :513].tolist() and mask == official_masks[0, :513].tolist(), text[:5]


def test_mmada_decoding_truncates_like_mmada():
    """MMaDA: clamp((x + 1) / 2, 0, 1) * 255 then astype(np.uint8); rounding moved ~half the pixels by 1."""
    import numpy as np

    from paintbench.trainer.policies.backbone import to_uint8

    x = torch.linspace(-1, 1, 1001).reshape(1, 1, 7, 143).expand(1, 3, 7, 143)
    official = (torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0) * 255.0).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    ours = to_uint8(x, low=-1.0, rounding="truncate").permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours, official)
    assert not np.array_equal(to_uint8(x, low=-1.0).permute(0, 2, 3, 1).numpy(), official)


def test_mmada_import_failure_is_the_error_with_its_cause(tmp_path, monkeypatch):
    """It fell back to AutoModel (no VQ decoder) and the user saw 'model type mmada not recognized'."""
    import sys

    from paintbench.errors import UserError
    from paintbench.trainer.policies.mmada import import_mmada

    monkeypatch.setitem(sys.modules, "models", None)  # MMaDA's package is not importable here
    with pytest.raises(UserError, match=r"MMaDA's model code cannot be imported \((ModuleNotFound|Import)Error.*PYTHONPATH"):
        import_mmada()


class LLaDABlock(nn.Module):
    """The module names of a LLaDA (MMaDA, Lumina-DiMOO) llama block."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        for name in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"):
            setattr(self, name, nn.Linear(d, d))


@pytest.mark.parametrize("policy_cls", [MMaDAPolicy, DiMOOPolicy])
def test_lora_targets_are_the_models_own_names_and_never_silently_fewer(policy_cls):
    """LLaDA calls o/gate/down `attn_out`/`ff_proj`/`ff_out`: only q, k, v and up got adapters while the
    run recorded all seven."""
    from paintbench.errors import InputError
    from paintbench.trainer.config import HTGRPOConfig

    layout = M_LAYOUT if policy_cls is MMaDAPolicy else D_LAYOUT
    model = nn.Sequential(LLaDABlock(), LLaDABlock())
    extra = {"prompt_builder": raw_prompt} if policy_cls is DiMOOPolicy else {}
    policy = policy_cls(model, WordIds(bos=94), None, layout=layout, **extra)
    policy.add_lora(rank=2, alpha=4, dropout=0.0, targets=HTGRPOConfig().lora_targets)
    adapted = {n.split(".")[-2] for n, _ in policy.model.named_modules() if n.endswith("lora_A")}
    assert adapted == {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}
    assert policy.options["lora_targets"] == ["q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"]
    other = policy_cls(nn.Sequential(LLaDABlock()), WordIds(bos=94), None, layout=layout, **extra)
    with pytest.raises(InputError, match=r"LoRA targets \['wq'\] are not modules of this model"):
        other.add_lora(rank=2, alpha=4, dropout=0.0, targets=["q_proj", "wq"])


def test_dimoo_never_falls_back_silently(monkeypatch):
    """Without DiMOO's code it loaded AutoModel and used the raw prompt without a word."""
    import sys

    from paintbench.errors import UserError
    from paintbench.trainer.policies.dimoo import default_prompt_builder

    monkeypatch.setitem(sys.modules, "utils", None)
    monkeypatch.setitem(sys.modules, "utils.prompt_utils", None)
    with pytest.raises(UserError, match=r"utils\.prompt_utils\.create_prompt_templates .* cannot be imported .*raw_prompt"):
        default_prompt_builder()
    with pytest.raises(UserError, match="cannot be imported"):
        DiMOOPolicy(StandInLM(116), WordIds(), None, layout=D_LAYOUT)  # no template given, none importable
    raw = DiMOOPolicy(StandInLM(116), WordIds(), None, layout=D_LAYOUT, prompt_builder=raw_prompt)
    assert raw.options["prompt_template"] == "raw"  # recorded: results say it was not DiMOO's template



def test_gradient_checkpointing_reaches_llada_one_level_down():
    """It only warned: MMaDA's switch is `model.model.set_activation_checkpointing`."""
    from paintbench.errors import InputError

    class Core(nn.Module):
        strategy = None

        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(LLaDABlock())

        def set_activation_checkpointing(self, strategy):
            self.strategy = strategy

    class HFWrapper(nn.Module):  # MMadaModelLM: transformers' switch refuses, the core has LLaDA's
        def __init__(self):
            super().__init__()
            self.model = Core()

        def gradient_checkpointing_enable(self):
            raise ValueError("MMadaModelLM does not support gradient checkpointing.")

    policy = MMaDAPolicy(HFWrapper(), WordIds(bos=94), None, layout=M_LAYOUT)
    policy.set_gradient_checkpointing(True)
    assert policy.model.model.strategy == "whole_layer"
    assert policy.options["gradient_checkpointing"] == "Core.set_activation_checkpointing"
    bare = MMaDAPolicy(nn.Sequential(LLaDABlock()), WordIds(bos=94), None, layout=M_LAYOUT)
    with pytest.raises(InputError, match="exposes no gradient-checkpointing switch"):
        bare.set_gradient_checkpointing(True)


def test_dimoo_code_offset_is_read_from_the_vocabulary_like_dimoo():
    from paintbench.trainer.policies.dimoo import code_offset_from_vocab

    assert code_offset_from_vocab(StandInLM(116), 16) == 100 == D_LAYOUT.code_offset
    assert code_offset_from_vocab(StandInLM(300), 16) == 284

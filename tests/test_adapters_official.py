"""The `mmada` and `lumina-dimoo` adapters against the models' OWN code, in the models' own environment.

Tiny models are built from the vendored official config classes (`../shared/vendor/{mmada,lumina_dimoo}`,
unmodified) with the weights of the fixture manifests (`../shared/fixtures/{mmada,dimoo}`), saved with
`save_pretrained`, and loaded through `paintbench.trainer.policies.build(...)` exactly as a user's run
config does (the model code found on the path, as PYTHONPATH gives it to a user). The word-level tokenizer
stand-ins have the real id layout (the fixtures' `make_tokenizer.py`). The expected outputs of those
fixture folders are not produced yet (their README), so every comparison here runs the official function
itself: ids and counts must be equal, logits within 1e-5, replayed generation ids equal, decoded pixels
equal.

The official code needs its pins (transformers 4.46, diffusers 0.32: MMaDA's `models` package does not
import under diffusers 0.42 and neither model's `from_pretrained` runs under transformers 5), so these
tests run in tox's `models` env (`constraints/models.txt`, called by `.ci/run`) and skip elsewhere with
that reason.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from paintbench.metrics.synthetic import build_state_dict
from paintbench.trainer import policies
from paintbench.trainer import sampling as pb_sampling
from paintbench.trainer.policies.dimoo import image_positions
from paintbench.trainer.policies.mmada import t2i_inputs
from paintbench.trainer.policy import MASK
from paintbench.trainer.sampling import SamplerOptions, keep_masked, make_generators, rollout
from tests.shared_data import SHARED, require

pytestmark = [pytest.mark.slow, pytest.mark.hf]

MMADA_SPECIALS = ("<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # the config default
LLADA_NAMES = {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}


def _models_env() -> None:
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip(f"the models' own code needs their pins (transformers 4.46; this env has "
                    f"{transformers.__version__}): run `tox -e models`")


def _on_path(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official repository on the import path (a user's PYTHONPATH), first, its packages fresh."""
    monkeypatch.syspath_prepend(str(folder))
    for name in [m for m in sys.modules if m.split(".")[0] in {"models", "model", "training", "utils", "generators", "config"}]:
        monkeypatch.delitem(sys.modules, name)


def _official(vendor: str, fixture: str, modules: list[str], mp: pytest.MonkeyPatch) -> tuple[Path, list]:
    """(fixture folder, the official modules) with the vendored repository on the path, or a skip that
    says what is missing."""
    _models_env()
    folder = require(SHARED / "vendor" / vendor)
    fixture_folder = require(SHARED / "fixtures" / fixture)
    _on_path(folder, mp)
    try:
        return fixture_folder, [importlib.import_module(m) for m in modules]
    except ImportError as e:
        mp.undo()
        pytest.skip(f"{vendor}'s code does not import here ({e}): run `tox -e models`")


def _module_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_weights(model: torch.nn.Module, fixture: Path) -> None:
    with gzip.open(fixture / "manifest.json.gz", "rt") as f:
        man = json.load(f)
    model.load_state_dict(build_state_dict(man["entries"], man["seed"], expected_digest=man["state_digest"]), strict=True)


def _prompts(fixture: Path) -> list[str]:
    return [p for p in (fixture / "prompts.txt").read_text().splitlines() if p.strip()]


def _replaying(monkeypatch: pytest.MonkeyPatch, draws: list[torch.Tensor], gumbels: list[torch.Tensor]) -> None:
    """paintbench's sampler consuming the official function's recorded draws, step by step."""
    steps = {"draw": iter(draws), "gumbel": iter(gumbels)}
    monkeypatch.setattr(pb_sampling, "inverse_cdf", lambda probs, u: next(steps["draw"]).to(probs.device))
    monkeypatch.setattr(pb_sampling, "gumbel", lambda u: next(steps["gumbel"]).to(u.device, u.dtype))


# -- MMaDA ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mmada(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    fixture, (models, prompting) = _official("mmada", "mmada", ["models", "training.prompting_utils"], mp)
    root = tmp_path_factory.mktemp("mmada")
    model = models.MMadaModelLM(models.MMadaConfig(**json.loads((fixture / "config.json").read_text())))
    _tiny_weights(model, fixture)
    model.save_pretrained(root / "model")
    torch.manual_seed(0)
    models.MAGVITv2().save_pretrained(root / "vq")   # MAGVIT-v2 has one fixed architecture; seeded init weights
    _module_from(fixture / "make_tokenizer.py", "mmada_make_tokenizer").build("mmada", root / "tok")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(root / "tok"), padding_side="left")
    uni = prompting.UniversalPrompting(tok, max_text_len=512, special_tokens=MMADA_SPECIALS, ignore_id=-100,
                                       cond_dropout_prob=0.1, use_reserved_token=True)
    options = {"model_path": str(root / "model"), "vq_path": str(root / "vq"), "tokenizer_path": str(root / "tok")}
    policy = policies.build("mmada", device="cpu", dtype="float32", **options)
    yield SimpleNamespace(policy=policy, official=policy.model, models=models, uni=uni, options=options,
                          prompts=_prompts(fixture), root=root,
                          modeling=importlib.import_module("models.modeling_mmada"),
                          sampling=importlib.import_module("models.sampling"))
    mp.undo()


def test_mmada_loads_through_the_adapter_with_mmadas_classes(mmada):
    assert type(mmada.policy.model).__name__ == "MMadaModelLM" and type(mmada.policy.vq).__name__ == "MAGVITv2"
    layout = mmada.policy.layout
    assert layout.code_offset == len(mmada.uni.text_tokenizer) == 126349
    assert layout.pad_id == mmada.uni.pad_id and layout.text_len == mmada.uni.max_text_len == 513


def test_mmada_input_ids_equal_universal_promptings_t2i_gen(mmada):
    prompts = mmada.prompts                                   # one of them is longer than 512 tokens
    assert max(len(mmada.uni.text_tokenizer(p)["input_ids"]) for p in prompts) > 513
    canvas = torch.full((len(prompts), 1024), MASK)
    batch = mmada.policy.encode_prompts(prompts)
    for texts, text_ids in ((prompts, mmada.policy._text_ids(batch)), ([""] * len(prompts), [[]] * len(prompts))):
        ids, mask = t2i_inputs(mmada.policy.layout, text_ids, canvas)
        want_ids, want_mask = mmada.uni((list(texts), torch.full((len(prompts), 1024), 126336)), "t2i_gen")
        assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask.long())


def _mmada_official_logits(mmada, prompts: list[str], canvas: torch.Tensor, cfg: float) -> torch.Tensor:
    """MMaDA's forward and slicing as `t2i_generate` does them (uncond = empty prompt's text part + image)."""
    off, n = len(mmada.uni.text_tokenizer), 1024
    image = torch.where(canvas == MASK, torch.full_like(canvas, 126336), canvas + off)
    out = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ci, cm = mmada.uni(([p], image[i:i + 1].clone()), "t2i_gen")
            ui, um = mmada.uni(([""], image[i:i + 1].clone()), "t2i_gen")
            ids, mask = torch.cat([ci, torch.cat([ui[:, :513], ci[:, 513:]], 1)]), torch.cat([cm, um])
            bias = (mask[:, :, None] & mask[:, None, :]).bool().unsqueeze(1)
            lg = mmada.official(ids, attention_bias=bias).logits[:, -(n + 1):-1, off:off + 8192]
            out.append((1 + cfg) * lg[0] - cfg * lg[1] if cfg else lg[0])
    return torch.stack(out)


@pytest.mark.parametrize("cfg", [0.0, 3.5])
def test_mmada_logits_equal_mmadas_forward(mmada, cfg):
    prompts = [mmada.prompts[0], mmada.prompts[3]]
    g = torch.Generator().manual_seed(101)
    codes = torch.randint(0, 8192, (2, 1024), generator=g)
    canvas = torch.where(torch.rand(2, 1024, generator=g) < 0.3, codes, torch.full_like(codes, MASK))
    with torch.no_grad():
        got = mmada.policy.image_logits(mmada.policy.encode_prompts(prompts), canvas, cfg_scale=cfg)
    want = _mmada_official_logits(mmada, prompts, canvas, cfg)
    assert got.shape == want.shape == (2, 1024, 8192)
    assert (got - want).abs().max().item() <= 1e-5
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_mmada_schedule_counts_equal_t2i_generate(mmada, monkeypatch):
    """mask_len per step of MMaDA's own t2i_generate (on a forward returning random logits)."""
    g = torch.Generator().manual_seed(0)

    class RandomLogits:
        config = None

        def __call__(self, ids, attention_bias=None):
            return SimpleNamespace(logits=torch.randn(ids.shape[0], 1025, 8192, generator=g))

    real = mmada.modeling.mask_by_random_topk
    for steps in (12, 15, 20, 32):
        seen = []
        def recording(n, p, t=1.0, generator=None, seen=seen):
            seen.append(int(n.view(-1)[0]))
            return real(n, p, t, generator=generator)

        monkeypatch.setattr(mmada.modeling, "mask_by_random_topk", recording)
        ids = torch.full((1, 1026), 126336)
        ids[0, 0] = ids[0, -1] = 0
        mmada.models.MMadaModelLM.t2i_generate(
            RandomLogits(), input_ids=ids, uncond_input_ids=None, attention_mask=torch.ones_like(ids), temperature=1.0,
            timesteps=steps, noise_schedule=mmada.modeling.cosine_schedule, noise_type="mask", seq_len=1024,
            uni_prompting=SimpleNamespace(text_tokenizer=[]), config=None, generator=torch.Generator().manual_seed(0))
        ours, masked = [], 1024
        for step in range(steps):
            masked = keep_masked(step, steps, 1024, masked)
            ours.append(masked)
        assert ours[:-1] == seen[:-1] and ours[-1] == 0, steps  # last step: MMaDA returns every sampled id


@pytest.mark.parametrize("steps", [4, 7])
def test_mmada_generation_replays_t2i_generate_exactly(mmada, monkeypatch, steps):
    """t2i_generate with its own generator; its multinomial draws and Gumbel noise are recorded and fed to
    paintbench's sampler, which must then commit the same cells at the same steps: equal final ids. Why it
    is slow (~6 s a step on 2 cores): MMaDA's fixed 1,024 image tokens and its full 134,656-token vocabulary
    (the mask id 126336 and the code offset are hard-coded in its code, so the tiny model keeps them) make
    every CFG step two forwards of ~0.8 GB of fp32 logits each (1,537 positions x 134,656). So it replays
    4 and 7 steps (an even and an uneven split of 1,024 cells); the per-step counts of longer schedules
    (12, 15, 20, 32) are compared with t2i_generate's own by the schedule test above, which needs no model."""
    prompt = mmada.prompts[1]
    ci, cm = mmada.uni(([prompt], torch.full((1, 1024), 126336)), "t2i_gen")
    ui, um = mmada.uni(([""], torch.full((1, 1024), 126336)), "t2i_gen")
    draws, gumbels = [], []
    real_mult, real_gn = torch.multinomial, mmada.sampling.gumbel_noise

    def multinomial(p, k, generator=None, **kw):
        out = real_mult(p, k, generator=generator, **kw)
        draws.append(out[:, 0].view(1, 1024).clone())
        return out

    def gumbel_noise(t, generator=None):
        out = real_gn(t, generator=generator)
        gumbels.append(out.clone())
        return out

    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(torch, "multinomial", multinomial)
        m.setattr(mmada.sampling, "gumbel_noise", gumbel_noise)
        want = mmada.official.t2i_generate(
            input_ids=ci.clone(), uncond_input_ids=ui, attention_mask=cm, uncond_attention_mask=um, guidance_scale=3.5,
            temperature=1.0, timesteps=steps, noise_schedule=mmada.modeling.cosine_schedule, noise_type="mask",
            seq_len=1024, uni_prompting=mmada.uni, config=None, generator=torch.Generator().manual_seed(1234))
    assert len(draws) == len(gumbels) == steps
    _replaying(monkeypatch, draws, gumbels)
    got = rollout(mmada.policy, mmada.policy.encode_prompts([prompt]), make_generators([0]),
                  SamplerOptions(steps=steps, cfg_scale=3.5, temperature=1.0, temperature_mode="compound"))
    assert torch.equal(got.codes, want)


def test_mmada_decode_equals_mmadas_decoding(mmada):
    """Our uint8 conversion against MMaDA's decoding, on a 16 x 16 code grid (256 px): MAGVIT-v2's decoder is
    convolutional and `decode_code` takes the grid from sqrt(N), so the full 32 x 32 grid (4x the work, ~45 s
    on 2 cores) exercises no other code."""
    codes = torch.randint(0, 8192, (1, 256), generator=torch.Generator().manual_seed(3))
    got = mmada.policy.decode(codes)
    with torch.no_grad():   # MMaDA inference_t2i.py: clamp((x + 1) / 2, 0, 1) * 255, then .astype(np.uint8)
        x = torch.clamp((mmada.policy.vq.decode_code(codes) + 1.0) / 2.0, min=0.0, max=1.0) * 255.0
    want = torch.from_numpy(x.permute(0, 2, 3, 1).numpy().astype("uint8")).permute(0, 3, 1, 2)
    assert got.shape == (1, 3, 256, 256) and torch.equal(got, want)


def _lora_round_trip(policy_kind: str, options: dict, prompts, canvas, tmp_path) -> None:
    """LoRA on all seven default targets under the model's own names, two optimiser rounds, gradient
    checkpointing giving the same gradients, then a reload from the saved policy folder (policy_path)."""
    policy = policies.build(policy_kind, device="cpu", dtype="float32", **options, lora_rank=4, lora_alpha=8.0,
                            lora_dropout=0.0, lora_targets=LORA_TARGETS)
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in policy.model.named_parameters()
               if ".lora_A" in name}
    assert adapted == LLADA_NAMES == set(policy.config()["lora_targets"])   # recorded = what got adapters
    policy.train()
    batch = policy.encode_prompts(prompts)
    params = policy.trainable_parameters()
    optimiser = torch.optim.SGD(params, lr=0.5)
    target = torch.randint(0, 8192, canvas.shape, generator=torch.Generator().manual_seed(5))

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(policy.image_logits(batch, canvas).flatten(0, 1), target.flatten())

    for _ in range(2):
        optimiser.zero_grad()
        loss().backward()
        optimiser.step()
    optimiser.zero_grad()
    loss().backward()
    grads = [p.grad.clone() for p in params]
    policy.set_gradient_checkpointing(True)
    assert policy.config()["gradient_checkpointing"].endswith("set_activation_checkpointing")
    optimiser.zero_grad()
    loss().backward()
    assert all(torch.allclose(p.grad, g, rtol=1e-4, atol=1e-7) for p, g in zip(params, grads, strict=True))
    policy.eval()
    with torch.no_grad():
        trained = policy.image_logits(batch, canvas)
        reference = policy.make_reference().image_logits(batch, canvas)
    assert (trained - reference).abs().max() > 1e-3                  # the adapter moved the model
    policy.save(tmp_path / "policy")
    reloaded = policies.load(tmp_path, device="cpu", dtype="float32")
    with torch.no_grad():
        assert torch.equal(reloaded.image_logits(reloaded.encode_prompts(prompts), canvas), trained)


def test_mmada_lora_training_checkpointing_and_reload(mmada, tmp_path):
    canvas = torch.full((1, 1024), MASK)
    _lora_round_trip("mmada", mmada.options, [mmada.prompts[0]], canvas, tmp_path)


# -- Lumina-DiMOO ---------------------------------------------------------------------------------------
DIMOO_VQ = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 5,
                up_block_types=["UpDecoderBlock2D"] * 5, block_out_channels=[8] * 5, layers_per_block=1, act_fn="silu",
                latent_channels=16, sample_size=512, num_vq_embeddings=8192, norm_num_groups=4, vq_embed_dim=16,
                scaling_factor=0.18215, norm_type="group", mid_block_add_attention=True, lookup_from_codebook=True,
                force_upcast=False)   # the fixture generator's tiny VQ-VAE (make_fixtures.py)
DIMOO_LAYOUT = {"grid": [16, 16], "image_size": [256, 256]}   # 256 px: 16 × 16 codes


@pytest.fixture(scope="module")
def dimoo(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    fixture, (modeling, config, generator, gen_utils, image_utils, prompt_utils, official_config) = _official(
        "lumina_dimoo", "dimoo", ["model", "model.configuration_llada", "generators.image_generation_generator",
                                  "utils.generation_utils", "utils.image_utils", "utils.prompt_utils", "config"], mp)
    specials = official_config.SPECIAL_TOKENS
    from diffusers import VQModel

    root = tmp_path_factory.mktemp("dimoo")
    model = modeling.LLaDAForMultiModalGeneration(config.LLaDAConfig(**json.loads((fixture / "config.json").read_text())))
    _tiny_weights(model, fixture)
    model.save_pretrained(root / "model")
    torch.manual_seed(1)
    vq = VQModel(**DIMOO_VQ)
    with torch.no_grad():
        for p in vq.parameters():   # seeded, larger than the init, so decoded images are not flat
            if p.dim() >= 2:
                p.normal_(0.0, 0.1)
    vq.save_pretrained(root / "model" / "vqvae")
    _module_from(fixture / "make_tokenizer.py", "dimoo_make_tokenizer").build("dimoo", root / "model")
    from transformers import AutoTokenizer

    options = {"model_path": str(root / "model"), "layout": DIMOO_LAYOUT}
    policy = policies.build("lumina-dimoo", device="cpu", dtype="float32", **options)
    yield SimpleNamespace(policy=policy, official=policy.model, tok=AutoTokenizer.from_pretrained(str(root / "model")),
                          generator=generator, gen_utils=gen_utils, image_utils=image_utils, prompt_utils=prompt_utils,
                          specials=specials, options=options, prompts=_prompts(fixture), root=root)
    mp.undo()


def _dimoo_official_inputs(d, prompt: str, cells: list[int] | None = None):
    """inference/inference_t2i.py's ids: template prompt, <answer><boi> rows with newlines <eoi></answer>."""
    s = d.specials
    cond, uncond = d.prompt_utils.generate_text_to_image_prompt(prompt, d.prompt_utils.create_prompt_templates())
    con, unc = d.tok(cond)["input_ids"], d.tok(uncond)["input_ids"]
    img = d.image_utils.add_break_line(list(cells if cells is not None else [s["mask_token"]] * 256), 16, 16,
                                       new_number=s["newline_token"])
    pred = [s["answer_start"], s["boi"], *img, s["eoi"], s["answer_end"]]
    return torch.tensor([con + pred]), torch.tensor([unc]), len(con) + 2


def test_dimoo_loads_with_its_template_and_vocabulary_offset(dimoo):
    assert type(dimoo.policy.model).__name__ == "LLaDAForMultiModalGeneration"
    assert dimoo.policy.options["prompt_template"] == "dimoo"
    assert dimoo.policy.layout.code_offset == 134548 - 8192 == 126356


def test_dimoo_input_ids_equal_dimoos_inference(dimoo):
    for prompt in dimoo.prompts:
        x, unc, code_start = _dimoo_official_inputs(dimoo, prompt)
        batch = dimoo.policy.encode_prompts([prompt])
        cond = [int(t) for t in batch.tensors["cond"][0] if t >= 0]
        from paintbench.trainer.policies.dimoo import image_block

        ours = torch.cat([torch.tensor([cond]), image_block(dimoo.policy.layout, torch.full((1, 256), MASK))], 1)
        assert torch.equal(ours, x)
        assert [int(t) for t in batch.tensors["uncond"][0] if t >= 0] == unc[0].tolist()
        assert torch.equal(image_positions(dimoo.policy.layout, len(cond)), (x[0] == 126336).nonzero()[:, 0])
        assert code_start == len(cond) + 2


@pytest.mark.parametrize("cfg", [0.0, 4.0])
def test_dimoo_logits_equal_dimoos_forward(dimoo, cfg):
    prompts = dimoo.prompts[:2]
    g = torch.Generator().manual_seed(101)
    codes = torch.randint(0, 8192, (2, 256), generator=g)
    canvas = torch.where(torch.rand(2, 256, generator=g) < 0.3, codes, torch.full_like(codes, MASK))
    with torch.no_grad():
        got = dimoo.policy.image_logits(dimoo.policy.encode_prompts(prompts), canvas, cfg_scale=cfg)
        for i, p in enumerate(prompts):
            cells = torch.where(canvas[i] == MASK, torch.full_like(canvas[i], 126336), canvas[i] + 126356).tolist()
            x, unc, cs = _dimoo_official_inputs(dimoo, p, cells)   # generate_image's CFG pair
            pos = torch.tensor([cs + r * 17 + c for r in range(16) for c in range(16)])
            c = dimoo.official(x, infer=True).logits[0, pos, 126356:126356 + 8192]
            u = dimoo.official(torch.cat([unc, x[:, cs - 2:]], 1), infer=True).logits[0, pos - cs + unc.shape[1] + 2,
                                                                                       126356:126356 + 8192]
            want = (1 + cfg) * c - cfg * u if cfg else c
            assert (got[i] - want).abs().max().item() <= 1e-5
            assert torch.equal(got[i].argmax(-1), want.argmax(-1))


@pytest.mark.parametrize("steps", [7, 32])
def test_dimoo_generation_replays_generate_image_exactly(dimoo, monkeypatch, steps):
    """generate_image with its own generator, its Gumbel-max draws and confidence noise recorded (on the
    cells still masked) and fed to paintbench's sampler: equal final codes, equal kept-masked counts. Why
    the 32-step case is slow (~1 min on 2 cores): 32 is DiMOO's shipped default, each step two forwards
    (CFG) of the tiny model over its full 126k-entry vocabulary at every position; 7 steps is the odd split."""
    prompt = dimoo.prompts[0]
    x, unc, cs = _dimoo_official_inputs(dimoo, prompt)
    draws, gumbels, kept = [], [], []
    real_gms, real_topk, real_gn = (dimoo.generator.gumbel_max_sample, dimoo.generator.mask_by_random_topk,
                                    dimoo.gen_utils.gumbel_noise)
    state = {}

    def cells_masked():
        grid = state["x"][0, cs:cs + 16 * 17].view(16, 17)[:, :16].reshape(-1)
        return (grid == 126336).nonzero()[:, 0]

    def gumbel_max_sample(logits, tau=1.0, *, generator=None):
        out = real_gms(logits, tau, generator=generator)
        full = torch.zeros(1, 256, dtype=torch.long)
        full[0, cells_masked()] = out[0]
        draws.append(full)
        state["cells"] = cells_masked()
        return out

    def mask_by_random_topk(mask_len, probs, *, temperature=1.0, generator=None):
        kept.append(min(int(mask_len.view(-1)[0]), probs.size(1) - 1))
        state["confidence_noise"] = True
        return real_topk(mask_len, probs, temperature=temperature, generator=generator)

    def gumbel_noise(t, *, generator=None):
        out = real_gn(t, generator=generator)
        if state.pop("confidence_noise", False):
            full = torch.zeros(1, 256)
            full[0, state["cells"]] = out[0].float()
            gumbels.append(full)
        return out

    state["x"] = x
    with monkeypatch.context() as m:
        m.setattr(dimoo.generator, "gumbel_max_sample", gumbel_max_sample)
        m.setattr(dimoo.generator, "mask_by_random_topk", mask_by_random_topk)
        m.setattr(dimoo.gen_utils, "gumbel_noise", gumbel_noise)
        want = dimoo.generator.generate_image(dimoo.official, x, seq_len=256, newline_every=16, timesteps=steps,
                                              temperature=1.0, cfg_scale=4.0, uncon_ids=unc, code_start=cs,
                                              generator=torch.Generator().manual_seed(4321))
    assert len(draws) == len(gumbels) == steps
    _replaying(monkeypatch, draws, gumbels)
    got = rollout(dimoo.policy, dimoo.policy.encode_prompts([prompt]), make_generators([0]),
                  SamplerOptions(steps=steps, cfg_scale=4.0, temperature=1.0, temperature_mode="constant"))
    assert torch.equal(got.codes + 126356, want)
    masked, ours = 256, []
    for step in range(steps):
        masked = keep_masked(step, steps, 256, masked)
        ours.append(masked)
    assert ours == kept


def test_dimoo_decode_equals_decode_vq_to_image(dimoo, tmp_path):
    codes = torch.randint(0, 8192, (1, 256), generator=torch.Generator().manual_seed(3))
    got = dimoo.policy.decode(codes)
    with torch.no_grad():
        pil = dimoo.image_utils.decode_vq_to_image(codes + 126356, str(tmp_path / "x.png"), vae_ckpt=None,
                                                   image_height=256, image_width=256, vqvae=dimoo.policy.vq)
    import numpy as np

    want = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).unsqueeze(0)
    assert got.shape == want.shape == (1, 3, 256, 256)
    assert want.float().std() > 1.0 and torch.equal(got, want)


def test_dimoo_lora_training_checkpointing_and_reload(dimoo, tmp_path):
    _lora_round_trip("lumina-dimoo", dimoo.options, [dimoo.prompts[0]], torch.full((1, 256), MASK), tmp_path)


# -- sharded training and export (trainer.parallel, `paintbench train export`) ---------------------------------
PARALLEL_STEPS = """
import json, sys, torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from paintbench.harness.dist import Dist
from paintbench.trainer import parallel, policies
kind, options, prompts, out, mode = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], sys.argv[5]
dist = Dist.from_env("cpu")
torch.manual_seed(0)        # LoRA's A matrices are drawn at build: the same on every rank and in one process
policy = policies.build(kind, device="cpu", dtype="float32", **options)
policy.set_gradient_checkpointing(sys.argv[6] == "checkpointing")   # applied before sharding, as the trainer does
policy.eval()
n = policy.num_image_tokens
g = torch.Generator().manual_seed(7)
target = torch.randint(0, 8192, (len(prompts), n), generator=g)
canvas = torch.where(torch.rand(len(prompts), n, generator=g) < 0.5, target, torch.full_like(target, -1))
lo, hi = dist.share(len(prompts))
blocks = len(parallel.shard_units(policy)[0])            # FSDP2 units: one per LLaDA block
if mode in ("ddp", "fsdp"):
    parallel.apply(policy, parallel.Placement(parallel=mode),
                   parallel.device_mesh(mode, dist.world_size, torch.device("cpu")))
params = policy.trainable_parameters()
opt = torch.optim.SGD(params, lr=1e-2)
batch = policy.encode_prompts(prompts[lo:hi])
losses = []
for _ in range(2):
    opt.zero_grad()
    logits = policy.image_logits(batch, canvas[lo:hi])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target[lo:hi].flatten(), reduction="sum") / target.numel()
    loss.backward()
    if mode == "none":
        dist.all_reduce_grads(params)
    opt.step()
    losses.append(dist.sum([float(loss.detach())])[0])
whole = parallel.full_state(policy) if mode in ("ddp", "fsdp") else dict(policy.state_dict())
if dist.is_main:
    save_file({k: v.contiguous() for k, v in policy.policy_state(whole).items()}, out + ".safetensors")
    json.dump({"losses": losses, "blocks": blocks}, open(out + ".json", "w"))
dist.barrier()              # no rank tears the group down while another still uses it
dist.close()
"""


def _parallel_steps(d, kind: str, tmp_path: Path, vendor: str, lora: bool) -> dict[str, tuple[list, dict]]:
    import os
    import subprocess

    from safetensors.torch import load_file

    options = {**d.options, **({"lora_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0, "lora_targets": LORA_TARGETS}
                               if lora else {})}
    script = tmp_path / "steps.py"
    script.write_text(PARALLEL_STEPS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(SHARED / "vendor" / vendor), str(Path(__file__).resolve().parents[1])])}
    results = {}
    for mode, nproc in (("single", 1), ("fsdp", 2)):
        out = str(tmp_path / mode)
        args = [str(script), kind, json.dumps(options), json.dumps(d.prompts[:2]), out, mode,
                "plain" if lora else "checkpointing"]
        cmd = ([sys.executable, *args] if nproc == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args])
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        doc = json.loads(Path(out + ".json").read_text())
        layers = json.loads((Path(d.options["model_path"]) / "config.json").read_text())["n_layers"]
        assert doc["blocks"] == layers >= 2, doc                   # sharded per block, not only at the root
        results[mode] = (doc["losses"], load_file(out + ".safetensors"))
    return results


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_mmada_fsdp_on_two_ranks_equals_one_process(mmada, tmp_path, lora):
    """FSDP2 (one unit per LLaDA block of MMaDA's own model, then the model; full fine-tuning with LLaDA's
    activation checkpointing switched on first, as the trainer does) on 2 gloo ranks, one prompt each,
    against one process with both: updated weights within 1e-6 and losses within 1e-6 relative (one float32
    ulp of a loss near 10 is 1e-6) after two SGD steps. SGD, not AdamW: a one-prompt and a two-prompt forward
    round differently in the last bits, and Adam's division by sqrt(v) turns that into up to ~1 % of lr on
    gradients near its eps (7.9e-6 at lr 1e-3) — a property of Adam, not of sharding; the trainer's own AdamW
    under FSDP2 is compared end to end in tests/test_trainer_parallel.py."""
    got = _parallel_steps(mmada, "mmada", tmp_path, "mmada", lora)
    (l1, w1), (l2, w2) = got["single"], got["fsdp"]
    assert l1 == pytest.approx(l2, rel=1e-6) and l1[1] < l1[0]     # and the steps did something
    assert w1.keys() == w2.keys() and (any(".lora_" in k for k in w1) == lora)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-6


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dimoo_fsdp_on_two_ranks_equals_one_process(dimoo, tmp_path, lora):
    got = _parallel_steps(dimoo, "lumina-dimoo", tmp_path, "lumina_dimoo", lora)
    (l1, w1), (l2, w2) = got["single"], got["fsdp"]
    assert l1 == pytest.approx(l2, rel=1e-6) and l1[1] < l1[0]     # and the steps did something
    assert w1.keys() == w2.keys() and (any(".lora_" in k for k in w1) == lora)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-6


def test_mmada_export_loads_with_mmadas_own_from_pretrained(mmada, tmp_path):
    """A trained LoRA policy exported (adapter merged, `save_pretrained`) is read by MMaDA's own
    `MMadaModelLM.from_pretrained` and by `policies.build(policy_path=DIR)`: the same logits as the
    trained policy (merging adds B·A into W once: equal to float rounding)."""
    policy = policies.build("mmada", device="cpu", dtype="float32", **mmada.options, lora_rank=4, lora_alpha=8.0,
                            lora_dropout=0.0, lora_targets=LORA_TARGETS)
    with torch.no_grad():   # a trained adapter: B moved off its zero init
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    policy.save(tmp_path / "trained")
    from paintbench.commands.train import export

    export(SimpleNamespace(overrides=[str(tmp_path / "trained")], out=str(tmp_path / "export")))
    batch, canvas = policy.encode_prompts([mmada.prompts[0]]), torch.full((1, 1024), MASK)
    official = mmada.models.MMadaModelLM.from_pretrained(str(tmp_path / "export"), trust_remote_code=False,
                                                         torch_dtype=torch.float32)
    rebuilt = policies.build("mmada", device="cpu", dtype="float32", **{**mmada.options, "model_path": str(tmp_path / "export")})
    with torch.no_grad():
        want = policy.image_logits(batch, canvas)
        off, n = len(mmada.uni.text_tokenizer), 1024      # MMaDA's own prompting and slicing, as in t2i_generate
        ids, mask = mmada.uni(([mmada.prompts[0]], torch.full((1, n), 126336)), "t2i_gen")
        bias = (mask[:, :, None] & mask[:, None, :]).bool().unsqueeze(1)
        theirs = official(ids, attention_bias=bias).logits[:, -(n + 1):-1, off:off + 8192]
        assert (theirs - want).abs().max().item() <= 1e-4
        assert torch.equal(rebuilt.image_logits(batch, canvas), theirs)

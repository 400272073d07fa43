"""Weight resolution order, clear missing-file errors, safe loading, sha256 checks."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from paintbench.metrics import weights as W


def test_resolution_order_explicit_then_dir(tmp_path, monkeypatch):
    d1, d2 = tmp_path / "a", tmp_path / "b"
    d1.mkdir()
    d2.mkdir()
    (d1 / "HPS_v2.1_compressed.pt").write_bytes(b"1")
    (d2 / "HPS_v2.1_compressed.pt").write_bytes(b"2")
    monkeypatch.setenv(W.ENV_WEIGHTS_DIR, str(d2))
    assert W.resolve("hps-v2.1") == d2 / "HPS_v2.1_compressed.pt"  # env var
    assert W.resolve("hps-v2.1", weights_dir=d1) == d1 / "HPS_v2.1_compressed.pt"  # --weights-dir beats env
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"3")
    assert W.resolve("hps-v2.1", explicit=explicit, weights_dir=d1) == explicit  # explicit beats all
    assert W.resolve("hps-v2.1", explicit=d1) == d1 / "HPS_v2.1_compressed.pt"  # a folder as explicit path


def test_missing_file_error_names_file_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(W.MissingWeightsError) as e:
        W.resolve("imagereward", weights_dir=tmp_path)
    msg = str(e.value)
    assert "ImageReward.pt" in msg
    assert str(tmp_path / "ImageReward.pt") in msg
    assert "Hugging Face cache" in msg
    assert "paintbench weights fetch imagereward" in msg


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path):
    (tmp_path / "HPS_v2_compressed.pt").write_bytes(b"x")
    with pytest.raises(W.MissingWeightsError):
        W.resolve("hps-v2", explicit=tmp_path / "nope.pt", weights_dir=tmp_path)


def test_folder_weights_need_their_first_file(tmp_path):
    folder = tmp_path / "bert-base-uncased"
    folder.mkdir()
    with pytest.raises(W.MissingWeightsError):
        W.resolve("bert-base-uncased", explicit=folder)  # an empty folder is not the tokenizer
    (folder / "vocab.txt").write_text("[PAD]\n")
    assert W.resolve("bert-base-uncased", weights_dir=tmp_path) == folder


def test_hf_cache_is_searched_offline(tmp_path, monkeypatch):
    # Lay out a Hugging Face cache by hand, exactly as hf_hub_download stores files.
    cache = tmp_path / "hub"
    repo = cache / "models--xswu--HPSv2"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (snap / "HPS_v2_compressed.pt").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = (
        "from paintbench.metrics import weights as W\n"
        f"print(W.resolve('hps-v2', weights_dir={str(tmp_path / 'empty')!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("HPS_v2_compressed.pt")
    assert "models--xswu--HPSv2" in out.stdout


def test_load_state_dict_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="weights-only"):
        W.load_state_dict(bad)


def test_load_state_dict_reads_torch_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {"a": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, 2, dtype=torch.float16)}
    torch.save(sd, tmp_path / "x.pt")
    save_file(sd, str(tmp_path / "x.safetensors"))
    for f in ("x.pt", "x.safetensors"):
        got = W.load_state_dict(tmp_path / f)
        assert torch.equal(got["a"], sd["a"]) and got["b"].dtype == torch.float16


def test_load_state_dict_reads_torchscript_archives(tmp_path):
    module = torch.jit.script(torch.nn.Linear(3, 2))
    module.save(str(tmp_path / "scripted.pt"))
    got = W.load_state_dict(tmp_path / "scripted.pt")
    assert set(got) == {"weight", "bias"} and got["weight"].shape == (2, 3)


def test_fetch_checks_sha256_of_what_is_there(tmp_path):
    # A file already in place with the wrong bytes fails the check instead of being trusted.
    (tmp_path / "ViT-L-14.pt").write_bytes(b"not the real file")
    with pytest.raises(ValueError, match="sha256"):
        W.fetch("clip-vit-l-14", tmp_path)


def test_catalog_lists_official_names():
    names = {s.filename for s in W.catalog().values()}
    for official in ("sac+logos+ava1-l14-linearMSE.pth", "ViT-L-14.pt", "ImageReward.pt", "med_config.json",
                     "bert-base-uncased", "HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"):
        assert official in names
    json.dumps([s.source for s in W.catalog().values()])


def test_fetch_offline_names_the_file_the_destination_and_the_way_by_hand(tmp_path, monkeypatch):
    """Offline, `weights fetch` printed a library traceback; `--weights-dir` is the flag as everywhere."""
    from paintbench import cli

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(W, "_download", offline)
    code = cli.main(["weights", "fetch", "aesthetic-head", "--weights-dir", str(tmp_path)])
    assert code == 2
    with pytest.raises(W.FetchError) as e:
        W.fetch("aesthetic-head", tmp_path)
    msg = str(e.value)
    assert "sac+logos+ava1-l14-linearMSE.pth" in msg and str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth") in msg
    assert "download it elsewhere and copy it" in msg and "Network is unreachable" in msg


def test_the_missing_weight_error_lists_every_place_and_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(W.MissingWeightsError) as e:
        W.resolve("hps-v2.1", weights_dir=tmp_path / "typo")
    msg = str(e.value)
    assert f"{tmp_path / 'typo'} does not exist: is --weights-dir right?" in msg
    assert "Hugging Face cache (" in msg and "xswu/HPSv2" in msg
    with pytest.raises(W.MissingWeightsError) as e:
        W.resolve("aesthetic-head", weights_dir=tmp_path)
    assert "Hugging Face cache: not searched" in str(e.value)

"""Teachers: the demo teacher is a real metric (above chance on demo NIGHT), the DreamSim
adapter reproduces DreamSim's own embedding code (branch normalisation, feature choice,
concatenation order, embedding normalisation), and its weight loading applies LoRA files."""

from __future__ import annotations

import copy

import pytest
import torch

from lipsim.data.night import NightTriplets, read_night
from lipsim.errors import LipSimError
from lipsim.registry import metric_card, names
from lipsim.scoring import twoafc
from lipsim.teachers import get_teacher


def test_registry_entries_and_dims():
    assert {"demo", "dreamsim_ensemble", "dino_vitb16", "clip_vitb32", "open_clip_vitb32"} <= set(
        names("teacher")
    )
    assert metric_card("dreamsim_ensemble").emb_dim == 1792
    assert metric_card("dino_vitb16").emb_dim == 768
    with pytest.raises(LipSimError, match="unknown teacher 'nope'; known: .*demo"):
        get_teacher("nope")


def test_demo_teacher_deterministic_and_above_chance(make_night_dir):
    root = make_night_dir(seed=3, n_test=160)
    df = read_night(root)
    ds = NightTriplets(df, 32)
    ref, x0, x1, p, _ = (
        torch.stack(t) if isinstance(t[0], torch.Tensor) else t
        for t in zip(*[ds[i] for i in range(len(ds))], strict=True)
    )
    t1, t2 = get_teacher("demo"), get_teacher("demo")
    with torch.no_grad():
        e = t1.embed(ref)
        assert e.shape == (len(df), t1.emb_dim)
        assert torch.equal(e, t2.embed(ref))  # seeded: two builds are the same function
        score = 100 * twoafc(t1(ref, x0), t1(ref, x1), p).mean()
    assert score > 65, f"demo teacher 2AFC {score:.1f}% is too close to chance"


def test_missing_weights_names_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-weights --teacher clip_vitb32"):
        get_teacher("clip_vitb32", weights_dir=tmp_path)


@pytest.mark.slow
def test_dreamsim_ensemble_matches_dreamsim_perceptual_model(monkeypatch, tmp_path):
    """Our adapter vs dreamsim.PerceptualModel built around the very same random backbones:
    only the weights are injected (offline); normalisation, features and concat are theirs."""
    from dreamsim.config import dreamsim_args
    from dreamsim.feature_extraction.extractor import ViTExtractor
    from dreamsim.model import PerceptualModel

    teacher = get_teacher("dreamsim_ensemble", random_weights=True)
    assert teacher.emb_dim == 1792 and teacher.image_size == 224
    branches = {b.backbone_name: b for b in teacher.branches}
    assert list(branches) == ["dino_vitb16", "clip_vitb16", "open_clip_vitb16"]

    def create_model(model_type, load_dir="./models"):
        b = branches[model_type]
        return b.model if b.proj is None else (b.model, b.proj)

    monkeypatch.setattr(ViTExtractor, "create_model", staticmethod(create_model))
    cfg = dreamsim_args["model_config"]["ensemble"]  # the installed dreamsim's own ensemble
    assert cfg["model_type"] == "dino_vitb16,clip_vitb16,open_clip_vitb16"
    ref_model = PerceptualModel(
        model_type=cfg["model_type"],
        feat_type=cfg["feat_type"],
        stride=cfg["stride"],
        lora=True,
        load_dir=str(tmp_path),
        normalize_embeds=True,
        device="cpu",
    ).eval()
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = teacher.embed(x), ref_model.embed(x)
        # Per-branch input normalisation (CLIP mean/std) and feature, for one cheap branch.
        clip_ours = branches["clip_vitb16"](x)
        clip_theirs = ref_model.extract_feats_list[1](x, extractor_index=1).squeeze()
    assert ours.shape == (2, 1792)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(clip_ours, clip_theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dreamsim_weight_files_and_lora_are_applied(tmp_path):
    """Write weights in DreamSim's file formats (backbone .pth.tar with proj, a peft LoRA
    folder), load them through the registry, and compare with the LoRA model itself."""
    from peft import LoraConfig, get_peft_model

    src = get_teacher("clip_vitb32", random_weights=True)
    branch = src.branches[0]
    folder = tmp_path / "clip_vitb32"
    folder.mkdir()
    sd = {k: v for k, v in branch.model.state_dict().items()}
    torch.save(
        {"state_dict": {**sd, "proj": branch.proj.clone()}}, folder / "clip_vitb32_pretrain.pth.tar"
    )
    lora_net = get_peft_model(
        copy.deepcopy(src.net),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=["qkv"]),
    )
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for n, p in lora_net.named_parameters():
            if "lora_B" in n:  # LoRA B starts at zero; make the adapter do something
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    lora_net.save_pretrained(str(folder / "clip_vitb32_single_lora"))

    loaded = get_teacher("clip_vitb32", weights_dir=tmp_path)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = lora_net.base_model.model.extractor_list[0](x)
        plain = src.features(x)[0]
        got = loaded.features(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-4)  # the adapter changed the model


def test_fetch_weights_from_loopback_server(tmp_path):
    """Download + unzip + marker record, against a local HTTP server (no internet)."""
    import functools
    import hashlib
    import http.server
    import threading
    import zipfile

    from lipsim.registry import Download
    from lipsim.teachers import fetch_weights

    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(site / "ckpt.zip", "w") as zf:
        zf.writestr("clip_vitb32_pretrain.pth.tar", b"weights")
        zf.writestr("clip_vitb32_single_lora/adapter_config.json", b"{}")
    (site / "backbone.pth").write_bytes(b"backbone")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rec = fetch_weights(
            "clip_vitb32",
            tmp_path / "w",
            downloads=(
                Download(f"{url}/ckpt.zip", "zip", "ckpt.zip"),
                Download(f"{url}/backbone.pth", "file", "bb.pth"),
            ),
        )
    finally:
        server.shutdown()
    files = {f["path"]: f for f in rec["files"]}
    assert {
        "ckpt.zip",
        "bb.pth",
        "clip_vitb32_pretrain.pth.tar",
        "clip_vitb32_single_lora/adapter_config.json",
    } <= set(files)
    assert files["bb.pth"]["sha256"] == hashlib.sha256(b"backbone").hexdigest()
    assert (
        tmp_path / "w" / "clip_vitb32" / "clip_vitb32_pretrain.pth.tar"
    ).read_bytes() == b"weights"


def test_fetch_weights_rejects_an_archive_escaping_the_weights_folder(
    tmp_path, capsys, monkeypatch
):
    """Weights archives get the same safe extraction as NIGHT: a `../` entry is refused,
    nothing lands outside (or inside) the weights folder, and no marker is written."""
    import io
    import zipfile

    from loopback_server import LoopbackServer

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.pth", b"weights")
        zf.writestr("../escaped.txt", b"owned")
    with LoopbackServer({"/w.zip": buf.getvalue()}) as srv:
        import dataclasses

        from lipsim.registry import METRICS_TABLE, Download

        card = dataclasses.replace(
            METRICS_TABLE["lpips"], downloads=(Download(f"{srv.url}/w.zip", "zip", "w.zip"),)
        )
        monkeypatch.setitem(METRICS_TABLE, "lpips", card)
        marker = tmp_path / "w" / "lpips.json"
        from lipsim.__main__ import main  # an expected error: one `error:` line, exit 1

        rc = main(
            [
                "fetch-weights",
                "--teacher",
                "lpips",
                "--weights-dir",
                str(tmp_path / "w"),
                "--marker",
                str(marker),
            ]
        )
    assert rc == 1
    assert "escaped.txt" in capsys.readouterr().err
    assert not (tmp_path / "w" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "w" / "lpips" / "ok.pth").exists()
    assert not marker.exists()


def test_demo_teacher_is_fragile_like_a_vit(make_night_dir):
    """Its random Fourier part (bandwidth below the demo's attack radii) lets a small, steered
    perturbation flip 2AFC decisions: at the paper's eps 2 scaled to 32 px the teacher
    collapses, while the same network without that part keeps most of its score."""
    from lipsim.attacks import AttackSpec, attack_triplets
    from lipsim.cli._night import triplet_loader
    from lipsim.teachers.demo import DemoTeacher

    df = read_night(make_night_dir(seed=3, n_test=48)).reset_index(drop=True)
    spec = AttackSpec("pgd", "L2", 2 / 7, steps=10)  # lipsim.radius: 2.0 x 32 / 224

    def scores(teacher):
        rows = attack_triplets(
            teacher,
            triplet_loader(df, 32, 48, 0),
            spec,
            device="cpu",
            ids=df["id"].to_numpy(),
            splits=df["split"].to_numpy(),
            log=None,
        )
        return 100 * rows["score_clean"].mean(), 100 * rows["score_adv"].mean()

    natural, attacked = scores(get_teacher("demo"))
    smooth_natural, smooth_attacked = scores(DemoTeacher(fragile_weight=0.0))
    assert natural > 60 and abs(natural - smooth_natural) < 8  # the natural score is kept
    assert attacked < natural - 30, (natural, attacked)
    assert smooth_attacked > attacked + 20, (smooth_attacked, attacked)
    with pytest.raises(LipSimError, match="fragile_weight"):
        DemoTeacher(fragile_weight=1.0)

"""Official SGMSE+ checkpoint -> our format, checked against the reference network's own output."""

import pytest
import torch
from sgmse.backbones.ncsnpp import NCSNpp as ReferenceNCSNpp

from audiodiff.checkpoint import load_pretrained
from audiodiff.cli import main
from audiodiff.convert import convert_sgmse_checkpoint

HPARAMS = dict(
    backbone="ncsnpp",
    sde="ouve",
    nf=16,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(64,),
    theta=1.5,
    sigma_min=0.05,
    sigma_max=0.5,
    N=30,
    n_fft=510,
    hop_length=128,
    spec_factor=0.15,
    spec_abs_exponent=0.5,
    t_eps=0.03,
)


def reference_checkpoint(path):
    """A Lightning-style checkpoint as sgmse writes it: dnn.* weights, torch_ema state, hparams."""
    torch.manual_seed(0)
    ref = ReferenceNCSNpp(
        nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(64,), image_size=256
    )
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(
                0, 0.05
            )  # the reference zero-initialises some layers; make every weight count
    raw = {"dnn." + k: v.clone() for k, v in ref.state_dict().items()}
    trainable = [p for p in ref.parameters() if p.requires_grad]
    shadow = [p.detach() + 0.01 * torch.randn_like(p) for p in trainable]  # EMA differs from raw
    ema = {"decay": 0.999, "num_updates": 10, "shadow_params": shadow, "collected_params": None}
    torch.save({"state_dict": raw, "ema": ema, "hyper_parameters": HPARAMS}, path)
    with torch.no_grad():
        named = [n for n, p in ref.named_parameters() if p.requires_grad]
        for name, value in zip(named, shadow):
            ref.get_parameter(name).copy_(value)  # the reference evaluates with EMA weights
    return ref.eval()


def test_converted_checkpoint_reproduces_reference_score(tmp_path):
    ref = reference_checkpoint(tmp_path / "epoch=1.ckpt")
    assert main(["convert", str(tmp_path / "epoch=1.ckpt"), "-o", str(tmp_path / "ours")]) == 0
    model, config = load_pretrained(tmp_path / "ours")
    assert config.backbone.nf == 16 and config.sampler.steps == 30 and config.spec.beta == 0.15
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 256, 64, dtype=torch.complex64, generator=gen)
    y = torch.randn(2, 1, 256, 64, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.7, 0.1])
    with torch.no_grad():
        expected = -ref(torch.cat([x, y], dim=1), t)  # sgmse ScoreModel.forward for ncsnpp
        ours = model(x, y, t)
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_non_ema_conversion_differs(tmp_path):
    reference_checkpoint(tmp_path / "a.ckpt")
    ema_dir = convert_sgmse_checkpoint(tmp_path / "a.ckpt", tmp_path / "ema")
    raw_dir = convert_sgmse_checkpoint(tmp_path / "a.ckpt", tmp_path / "raw", use_ema=False)
    ema_w = dict(load_pretrained(ema_dir)[0].named_parameters())
    raw_w = dict(load_pretrained(raw_dir)[0].named_parameters())
    assert any(not torch.equal(ema_w[k], raw_w[k]) for k in ema_w)


def test_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    torch.save({"weights": torch.zeros(1)}, bad)
    assert main(["convert", str(bad), "-o", str(tmp_path / "x")]) == 1  # a failed input
    assert "bad.ckpt" in capsys.readouterr().err


# -- the newer layouts: ncsnpp_v2 (+ preconditioning, + Schrödinger bridge) and ncsnpp_48k ------


def _reference_std(hp, t):
    from sgmse.sdes import OUVESDE, SBVESDE

    if hp["sde"] == "sbve":
        return SBVESDE(k=hp["k"], c=hp["c"], N=hp["N"])._std(t)
    return OUVESDE(theta=hp["theta"], sigma_min=hp["sigma_min"], sigma_max=hp["sigma_max"])._std(t)


def reference_forward(dnn, hp, x_t, y, t):
    """sgmse 0.1.2 ``ScoreModel.forward`` (with ``_c_in``/``_c_out``/``_c_skip``), written out:
    sgmse.model imports torchaudio, which does not import here."""
    if hp["backbone"] != "ncsnpp_v2":
        return -dnn(torch.cat([x_t, y], dim=1), t)
    std = _reference_std(hp, t)[:, None, None, None]
    sd = hp.get("sigma_data", 0.1)
    c_in = {"1": 1.0, "edm": 1.0 / torch.sqrt(std**2 + sd**2)}[hp["c_in"]]
    c_out = {"1": 1.0, "sigma": std, "1/sigma": 1.0 / std,
             "edm": (std * sd) / torch.sqrt(sd**2 + std**2)}[hp["c_out"]]  # fmt: skip
    c_skip = {"0": 0.0, "edm": sd**2 / (std**2 + sd**2)}[hp["c_skip"]]
    F = dnn(c_in * x_t, c_in * y, t)
    if hp["network_scaling"] == "1/sigma":
        F = F / std
    elif hp["network_scaling"] == "1/t":
        F = F / t[:, None, None, None]
    if hp["loss_type"] == "denoiser":
        return (F - x_t) / std.pow(2)
    return c_skip * x_t + c_out * F


SMALL = dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1)
LAYOUTS = {
    "v2-bridge-data-prediction": dict(
        backbone="ncsnpp_v2", sde="sbve", loss_type="data_prediction", k=2.6, c=0.4, N=50,
        sampler_type="ode", network_scaling=None, c_in="1", c_skip="0", c_out="1",
        attn_resolutions=(64,), n_fft=510, **SMALL,
    ),
    "v2-ouve-denoiser-edm": dict(
        backbone="ncsnpp_v2", sde="ouve", loss_type="denoiser", loss_weighting="edm",
        theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30, network_scaling=None, c_in="edm",
        c_skip="0", c_out="1", sigma_data=0.1, attn_resolutions=(64,), n_fft=510, **SMALL,
    ),
    "v2-ouve-score-edm-preconditioned": dict(
        backbone="ncsnpp_v2", sde="ouve", loss_type="score_matching", theta=1.5,
        sigma_min=0.05, sigma_max=0.5, N=30, network_scaling="1/sigma", c_in="edm",
        c_skip="edm", c_out="edm", sigma_data=0.2, attn_resolutions=(), n_fft=510, **SMALL,
    ),
    "48k-ouve-score-768-bins": dict(
        backbone="ncsnpp_48k", sde="ouve", theta=2.0, sigma_min=0.1, sigma_max=1.0, N=30,
        n_fft=1534, hop_length=384, spec_factor=0.065, spec_abs_exponent=0.667, sr=48000,
        attn_resolutions=(), **SMALL,
    ),
}  # fmt: skip


def layout_checkpoint(path, hp):
    """A Lightning checkpoint of sgmse's own backbone class (random weights, different EMA)."""
    from sgmse.backbones.ncsnpp_48k import NCSNpp_48k
    from sgmse.backbones.ncsnpp_v2 import NCSNpp_v2

    cls = {"ncsnpp_v2": NCSNpp_v2, "ncsnpp_48k": NCSNpp_48k}[hp["backbone"]]
    torch.manual_seed(0)
    kwargs = {k: hp[k] for k in ("nf", "ch_mult", "num_res_blocks", "attn_resolutions")}
    ref = cls(**kwargs, image_size=hp["n_fft"] // 2 + 1)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.05)
    raw = {"dnn." + k: v.clone() for k, v in ref.state_dict().items()}
    trainable = [p for p in ref.parameters() if p.requires_grad]
    shadow = [p.detach() + 0.01 * torch.randn_like(p) for p in trainable]
    ema = {"decay": 0.999, "num_updates": 10, "shadow_params": shadow, "collected_params": None}
    torch.save({"state_dict": raw, "ema": ema, "hyper_parameters": hp}, path)
    with torch.no_grad():
        named = [n for n, p in ref.named_parameters() if p.requires_grad]
        for name, value in zip(named, shadow):
            ref.get_parameter(name).copy_(value)
    return ref.eval()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_converts_and_reproduces_the_reference_forward(tmp_path, layout):
    hp = LAYOUTS[layout]
    ref = layout_checkpoint(tmp_path / "m.ckpt", hp)
    assert main(["convert", str(tmp_path / "m.ckpt"), "-o", str(tmp_path / "ours")]) == 0
    model, config = load_pretrained(tmp_path / "ours")
    assert config.kind == ("bridge" if hp["sde"] == "sbve" else "score")
    assert config.spec.num_freqs == hp["n_fft"] // 2 + 1
    gen = torch.Generator().manual_seed(1)
    shape = (2, 1, hp["n_fft"] // 2 + 1, 16)
    x = torch.randn(shape, dtype=torch.complex64, generator=gen)
    y = torch.randn(shape, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.7, 0.1])
    with torch.no_grad():
        expected = reference_forward(ref, hp, x, y, t)
        ours = model(x, y, t)
    assert expected.abs().max() > 1e-2
    assert (ours - expected).abs().max() <= 1e-4 * expected.abs().max()
    raw = convert_sgmse_checkpoint(tmp_path / "m.ckpt", tmp_path / "raw", use_ema=False)
    raw_model, _ = load_pretrained(raw)
    with torch.no_grad():
        assert not torch.allclose(raw_model(x, y, t), ours)  # the EMA weights were taken


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"backbone": "dcunet"}, "unknown backbone 'dcunet'"),
        ({"loss_type": "mse"}, "unknown loss_type 'mse'"),
        ({"sde": "sbve"}, "sde 'sbve' with backbone 'ncsnpp'"),
        ({"transform_type": "log"}, "transform_type 'log'"),
    ],
)
def test_unmappable_checkpoints_are_refused_in_one_line(tmp_path, capsys, changes, reason):
    path = tmp_path / "odd.ckpt"
    reference_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"] = {**HPARAMS, **changes}
    torch.save(ckpt, path)
    assert main(["convert", str(path), "-o", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip()
    assert "odd.ckpt" in err and reason in err and "\n" not in err
    assert not (tmp_path / "x" / "config.json").exists()

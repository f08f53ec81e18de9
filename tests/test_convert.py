"""Official SGMSE+ checkpoint -> our format, checked against the reference network's own output."""

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

"""The video demo: data, tracker, model, the core's video wrapper on the real network (frames-axis and
AnimateDiff-style folded layouts agree with an independent computation), training/loading round trip and
the command lines' input checks. No shipped weights needed (a random-weight model is enough here)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn import functional as F

from lib_upsample_guidance.__main__ import main as cli_main
from lib_upsample_guidance.demo.video import pipeline
from lib_upsample_guidance.demo.video.dataset import sample_clips
from lib_upsample_guidance.demo.video.model import VideoUNet, VideoUNetConfig
from lib_upsample_guidance.demo.video.tracker import check_clip, check_clips
from lib_upsample_guidance.demo.video.wrapper import VideoModelDenoiser, load_video_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def net() -> VideoUNet:
    torch.manual_seed(0)
    model = VideoUNet(VideoUNetConfig(channels=(8, 16, 16), emb_dim=32, heads=2))
    with torch.no_grad():  # non-zero output layers, so the network's answer depends on its input
        for name, p in model.named_parameters():
            if name.endswith(("out.weight", "conv_out.weight")):
                p.normal_(0, 0.2)
    return model.eval().requires_grad_(False)


def test_clips_move_in_straight_lines_inside_the_frame():
    clips, track = sample_clips(16, 8, 16, torch.Generator().manual_seed(0))
    assert clips.shape == (16, 3, 8, 16, 16) and clips.min() >= -1 and clips.max() <= 1
    steps = track[:, 1:] - track[:, :-1]
    assert torch.allclose(steps, steps[:, :1].expand_as(steps), atol=1e-4)  # constant velocity
    assert track.min() > 0 and track.max() < 16


@pytest.mark.parametrize("frames,size", [(8, 16), (16, 16), (8, 32), (16, 32)])
def test_tracker_accepts_every_data_clip(frames, size):
    clips, _ = sample_clips(100, frames, size, torch.Generator().manual_seed(frames + size))
    assert all(c.ok for c in check_clips(clips))


@pytest.mark.parametrize("radius", [0.10, 0.30])
def test_tracker_rejects_an_object_of_a_size_the_data_never_has(monkeypatch, radius):
    from lib_upsample_guidance.demo.video import dataset

    monkeypatch.setattr(dataset, "R_MIN", radius)
    monkeypatch.setattr(dataset, "R_MAX", radius)
    monkeypatch.setattr(dataset, "MARGIN", 0.0)
    clips, _ = sample_clips(8, 8, 32, torch.Generator().manual_seed(1))
    checks = check_clips(clips)
    assert all(c.one_object and c.track_residual < 0.03 and c.area_ratio < 1.3 for c in checks)
    assert not any(c.data_size or c.ok for c in checks)


def test_tracker_rejects_broken_motion_and_duplicates():
    clips, track = sample_clips(16, 8, 16, torch.Generator().manual_seed(3))
    travel = (track[:, -1] - track[:, 0]).norm(dim=1) / 16
    clip = clips[int(travel.argmax())]
    assert float(travel.max()) > 0.3 and check_clip(clip).ok
    shuffled = clip[:, torch.tensor([0, 5, 2, 7, 1, 4, 3, 6])]  # same frames, scrambled order: not straight
    assert check_clip(shuffled).one_object and not check_clip(shuffled).ok
    twice = torch.cat([clip, clip], dim=-1)  # two objects side by side in every frame
    assert not check_clip(twice).one_object and not check_clip(twice).ok


def test_model_takes_more_frames_than_it_was_trained_on(net):
    for frames in (8, 16, 24):
        out = net(torch.randn(1, 3, frames, 16, 16), torch.tensor([0.5]))
        assert out.shape == (1, 3, frames, 16, 16)


def test_guided_video_step_matches_an_independent_computation(net):
    """2x frames and 2x size (k = 8) on the real network: 3-D average pooling, nearest repeat, sigma/sqrt(8);
    the folded layout (frames in the batch, as AnimateDiff) gives the same answer."""
    den = VideoModelDenoiser(net)
    s = pipeline.VideoSettings(theta=0.7, eta=1.0)
    x = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(1)) * 2
    sigma = torch.tensor([2.0, 2.0])
    out = pipeline.guided(den, s, 16)(x, sigma)
    d0 = den(x, sigma)
    d_low = den(F.avg_pool3d(x, 2), sigma / math.sqrt(8))
    expected = d0 + 0.7 * F.interpolate(d_low - F.avg_pool3d(d0, 2), scale_factor=2, mode="nearest")
    assert torch.allclose(out, expected, atol=1e-5)
    den_f = VideoModelDenoiser(net, folded=True)
    xf = x.transpose(1, 2).reshape(32, 3, 32, 32)
    out_f = pipeline.guided(den_f, s, 16, folded=True)(xf, sigma.repeat_interleave(16))
    assert torch.allclose(out_f.reshape(2, 16, 3, 32, 32).transpose(1, 2), out, atol=1e-5)


def test_methods_and_zero_guidance(net):
    den = VideoModelDenoiser(net)
    eps = pipeline.initial_noise(1, 16, 32, 0)
    s0 = pipeline.VideoSettings(steps=2, theta=0.0)
    plain = pipeline.run_method("plain", den, eps, s0).clips
    assert torch.equal(pipeline.run_method("ug", den, eps, s0).clips, plain)
    s = pipeline.VideoSettings(steps=2)
    ug = pipeline.run_method("ug", den, eps, s)
    assert not torch.equal(ug.clips, plain)
    assert torch.allclose(pipeline.run_method("ug_folded", den, eps, s).clips, ug.clips, atol=1e-5)
    base = pipeline.run_method("base", den, eps, s)
    assert base.clips.shape == (1, 3, 8, 16, 16)
    # cost: each guided step adds 1/k = 1/8 of a target evaluation
    assert ug.model_pixels == 2 * (16 * 32 * 32 + 8 * 16 * 16)


def test_train_writes_loadable_safetensors(tmp_path):
    from lib_upsample_guidance.demo.video import train

    out, record = tmp_path / "v.safetensors", tmp_path / "v.json"
    args = ["--max-steps", "2", "--minutes", "5", "--channels", "8,16,16", "--batch", "2", "--out", str(out)]
    assert train.main([*args, "--record", str(record)]) == 0
    model, meta = load_video_model(out)
    assert meta["base_frames"] == "8" and meta["base_size"] == "16" and meta["steps"] == "2"
    assert model(torch.zeros(1, 3, 8, 16, 16), torch.tensor([0.5])).shape == (1, 3, 8, 16, 16)
    with pytest.raises(ValueError, match="cannot load"):
        load_video_model(record)
    # continuing from those weights: same architecture (--channels ignored), the first run kept
    out2 = tmp_path / "v2.safetensors"
    more = ["--max-steps", "1", "--batch", "2", "--init", str(out), "--out", str(out2)]
    assert train.main([*more, "--record", str(tmp_path / "v2.json")]) == 0
    model2, meta2 = load_video_model(out2)
    assert model2.config == model.config and meta2["steps"] == "1"
    earlier = json.loads((tmp_path / "v2.json").read_text())["earlier_runs"]
    assert [r["steps"] for r in earlier] == ["2"] and json.loads(meta2["earlier_runs"]) == earlier


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "video", "--cells", "space"],
        ["bench", "video", "--n", "1"],
        ["bench", "video", "--eta", "2"],
        ["bench", "quality", "video", "--cells", "space"],
        ["demo", "video", "--frames", "3"],
        ["demo", "video", "--frames", "1", "--size", "1"],
        ["demo", "video", "--n", "0"],
    ],
)
def test_bad_input_is_one_message_and_status_2(argv, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("[Upsample guidance]") and "Traceback" not in err


def test_missing_weights_are_a_message(tmp_path, capsys):
    assert cli_main(["bench", "video", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_shipped_weights_are_small_safetensors_with_a_training_record():
    from pathlib import Path

    from lib_upsample_guidance.demo.video.wrapper import DEFAULT_WEIGHTS

    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 2_000_000
    with open(DEFAULT_WEIGHTS, "rb") as f:  # safetensors: 8-byte header length, then a JSON header
        header_len = int.from_bytes(f.read(8), "little")
        assert f.read(1) == b"{" and header_len < 100_000
    model, meta = load_video_model()
    assert meta["command"].startswith("python -m lib_upsample_guidance.demo.video.train")
    assert meta["base_frames"] == "8" and meta["base_size"] == "16" and int(meta["steps"]) > 0
    record_path = Path(__file__).resolve().parent.parent / "docs" / "video_training_record.json"
    record = json.loads(record_path.read_text())
    assert record["command"] == meta["command"] and str(record["steps"]) == meta["steps"]
    assert record["parameters"] == sum(p.numel() for p in model.parameters())


def test_bench_quality_video_is_the_video_bench(tmp_path, capsys):
    """`bench quality video` runs the one video counter (the same module as `bench video`)."""
    from lib_upsample_guidance.__main__ import COMMANDS
    from lib_upsample_guidance.demo.video import train

    assert COMMANDS[("bench", "quality", "video")] == COMMANDS[("bench", "video")]
    weights = tmp_path / "v.safetensors"
    tiny = ["--max-steps", "1", "--channels", "8,16,16", "--batch", "1", "--out", str(weights)]
    assert train.main([*tiny, "--record", str(tmp_path / "v.json")]) == 0
    capsys.readouterr()
    argv = ["bench", "quality", "video", "--weights", str(weights), "--n", "2", "--steps", "2"]
    assert cli_main([*argv, "--cells", "frames", "--out", str(tmp_path), "--quiet"]) == 0
    assert "| frames (8 f, 16 px) | base size |" in capsys.readouterr().out
    assert (tmp_path / "video.json").is_file()


def _point(theta: float, eta: float, correct: float, low: float) -> dict:
    return {"theta": theta, "eta": eta, "correct": correct, "correct_interval": (low, 1.0)}


def test_sweep_pick_is_the_best_worst_cell_then_the_mean_then_the_papers_side():
    from lib_upsample_guidance.demo.video.bench import choose_setting

    cells = {
        "frames": [_point(1, 1, 0.9, 0.80), _point(2, 0.5, 0.99, 0.90)],
        "size": [_point(1, 1, 0.9, 0.80), _point(2, 0.5, 0.80, 0.70)],
    }
    assert (choose_setting(cells)["theta"], choose_setting(cells)["eta"]) == (1, 1)  # worst cell 0.80 > 0.70
    cells["size"][1] = _point(2, 0.5, 0.9, 0.80)  # same worst cell: the higher mean wins
    assert (choose_setting(cells)["theta"], choose_setting(cells)["eta"]) == (2, 0.5)
    tie = {"frames": [_point(2, 0.5, 0.9, 0.8), _point(1, 1, 0.9, 0.8), _point(1, 0.5, 0.9, 0.8)]}
    assert (choose_setting(tie)["theta"], choose_setting(tie)["eta"]) == (1, 1)  # full tie: the paper's
    assert choose_setting({"frames": []}) is None


def test_sweep_runs_every_point_in_every_cell(tmp_path, capsys):
    from lib_upsample_guidance.demo.video import bench, train

    weights = tmp_path / "v.safetensors"
    tiny = ["--max-steps", "1", "--channels", "8,16,16", "--batch", "1", "--out", str(weights)]
    assert train.main([*tiny, "--record", str(tmp_path / "v.json")]) == 0
    argv = ["bench", "video", "--sweep", "--weights", str(weights), "--sweep-n", "2", "--steps", "2"]
    assert cli_main([*argv, "--cells", "frames", "--out", str(tmp_path), "--quiet"]) == 0
    sweep = json.loads((tmp_path / "video_sweep.json").read_text())
    points = {(p["theta"], p["eta"]) for p in sweep["cells"]["frames"]}
    assert points == {(t, e) for t in bench.SWEEP_THETAS for e in bench.SWEEP_ETAS}
    assert sweep["seed"] == 1 and sweep["choice"] is not None
    assert "pick" in capsys.readouterr().out

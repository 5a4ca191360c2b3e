"""Train the video demo model (CPU):
``python -m lib_upsample_guidance.demo.video.train --seed 1 --minutes 75 --budget cpu --threads 1``; the other
defaults are the shipped weights' settings (channels 24, 48, 72; batches of 16 clips).

Objective: v-prediction MSE on 8-frame 16 px clips (:mod:`.dataset`), t ~ U(0, 1) per clip,
x_t = a(t) x0 + s(t) eps (the cosine VP schedule of :mod:`lib_upsample_guidance.demo.model`), AdamW with a
linear warm-up and cosine decay over the budget (CPU time by default), and an exponential moving average (EMA)
of the weights, which is what gets saved (fp16 safetensors, architecture and training record in the
metadata), plus a JSON training record (command, seed, loss curve). ``--init`` continues from earlier weights
(a fresh schedule; the earlier runs' commands are kept in ``earlier_runs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..train import add_training_arguments, save_ema, setup_training, train_with_ema, v_loss
from .dataset import sample_clips
from .model import VideoUNet, VideoUNetConfig, config_to_metadata
from .wrapper import DEFAULT_WEIGHTS, load_video_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance.demo.video.train", description=__doc__)
    add_training_arguments(
        ap,
        size_help="frame side in pixels",
        batch=16,
        batch_help="clips per step",
        minutes=75.0,
        minutes_help="training budget in minutes",
        channels="24,48,72",
        ema=0.998,
        out=DEFAULT_WEIGHTS,
        record=Path("docs/video_training_record.json"),
    )
    ap.add_argument("--frames", type=int, default=8, help="frames per training clip")
    ap.add_argument(
        "--budget",
        choices=("cpu", "wall"),
        default="cpu",
        help="what --minutes counts: the process' CPU time (default; the same work on a loaded machine) or "
        "wall time",
    )
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue from these weights (a file this command wrote; its architecture is used and its "
        "commands are kept in the new file's metadata and record); the schedule starts again",
    )
    args = ap.parse_args(argv)

    cfg = VideoUNetConfig(channels=tuple(int(c) for c in args.channels.split(",")))
    earlier: list[dict[str, str]] = []
    if args.init is not None:
        init_model, init_meta = load_video_model(args.init)
        cfg = init_model.config
        earlier = [*json.loads(init_meta.get("earlier_runs", "[]")), _run_summary(init_meta)]
    model, ema, opt, gen = setup_training(VideoUNet, cfg, args)
    if args.init is not None:
        model.load_state_dict(init_model.state_dict())
        ema.load_state_dict(init_model.state_dict())
    args.earlier_runs = earlier
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training {n_params} parameters on {args.frames}x{args.size}x{args.size} clips, "
        f"{args.minutes} min budget",
        flush=True,
    )

    def batch_loss() -> torch.Tensor:
        x0, _ = sample_clips(args.batch, args.frames, args.size, gen)
        return v_loss(model, x0, gen)

    train_with_ema(
        model,
        ema,
        opt,
        batch_loss,
        args,
        lr_floor=0.05,
        save=lambda step, seconds, curve: _save(ema, cfg, args, step, seconds, curve),
    )
    return 0


def _save(ema, cfg, args, step: int, seconds: float, curve: list[dict[str, float]]) -> None:
    command = "python -m lib_upsample_guidance.demo.video.train " + " ".join(sys.argv[1:])
    meta = config_to_metadata(cfg)
    meta.update(
        {
            "base_size": str(args.size),
            "base_frames": str(args.frames),
            "seed": str(args.seed),
            "steps": str(step),
            "train_seconds": f"{seconds:.0f}",
            "budget": f"{args.minutes:g} min of {args.budget} time",
            "objective": "v-prediction, cosine VP schedule",
            "command": command,
            "earlier_runs": json.dumps(args.earlier_runs),
        }
    )
    record = {
        "command": command,
        "seed": args.seed,
        "size": args.size,
        "frames": args.frames,
        "batch": args.batch,
        "lr": args.lr,
        "ema": args.ema,
        "threads": args.threads,
        "steps": step,
        "train_seconds": round(seconds, 1),
        "budget": f"{args.minutes:g} min of {args.budget} time",
        "process_cpu_seconds": round(time.process_time(), 1),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "earlier_runs": args.earlier_runs,
        "loss_curve": curve,
    }
    save_ema(ema, meta, args.out, record, args.record)


def _run_summary(meta: dict[str, str]) -> dict[str, str]:
    """What a weights file's metadata says about the run that wrote it (kept by a run continuing from it)."""
    return {k: meta[k] for k in ("command", "steps", "train_seconds", "budget") if k in meta}


if __name__ == "__main__":
    raise SystemExit(main())

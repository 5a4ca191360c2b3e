"""Train the demo model (CPU): ``python -m lib_upsample_guidance.demo.train --seed 0 --size 16 --minutes 30``.

Objective: v-prediction MSE, t ~ U(0, 1), x_t = a(t) x0 + s(t) eps (see :mod:`.model`), AdamW with a
linear warm-up, an exponential moving average (EMA) of the weights that is what gets saved. Writes the EMA
weights as safetensors (fp16, architecture and training record in the metadata) and a JSON training record
(command, seed, loss curve).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .dataset import sample_batch
from .model import SmallUNet, UNetConfig, config_to_metadata
from .wrapper import DEFAULT_WEIGHTS


def v_loss(model: Callable[..., torch.Tensor], x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """mean over every element of (model(x_t, t) - v)^2, x_t = a x0 + s eps, v = a eps - s x0, with
    a = cos(pi t / 2), s = sin(pi t / 2) and one t ~ U(0, 1) per sample (an image [C, H, W] or a clip
    [C, F, H, W]: a and s broadcast over all axes after the first)."""
    n = x0.shape[0]
    t = torch.rand(n, generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    shape = (n,) + (1,) * (x0.ndim - 1)
    a = torch.cos(t * math.pi / 2).reshape(shape)
    s = torch.sin(t * math.pi / 2).reshape(shape)
    xt = a * x0 + s * eps
    v = a * eps - s * x0
    return (model(xt, t) - v).pow(2).mean()


def add_training_arguments(
    ap: argparse.ArgumentParser,
    *,
    size_help: str,
    batch: int,
    batch_help: str | None,
    minutes: float,
    minutes_help: str,
    channels: str,
    ema: float,
    out: Path,
    record: Path,
) -> None:
    """The options the image and the video demo's training share, with each one's defaults."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=16, help=size_help)
    ap.add_argument("--batch", type=int, default=batch, help=batch_help)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--minutes", type=float, default=minutes, help=minutes_help)
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels", default=channels, help="UNet channels per level, comma-separated")
    ap.add_argument("--ema", type=float, default=ema)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--record", type=Path, default=record)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib_upsample_guidance.demo.train", description=__doc__)
    add_training_arguments(
        ap,
        size_help="training image side in pixels",
        batch=32,
        batch_help=None,
        minutes=30.0,
        minutes_help="wall-clock training budget",
        channels="24,48,64",
        ema=0.999,
        out=DEFAULT_WEIGHTS,
        record=Path("docs/training_record.json"),
    )
    ap.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="RECORD_JSON",
        help="only draw RECORD_JSON's loss curve next to it as a PNG (needs Pillow), then exit",
    )
    args = ap.parse_args(argv)
    if args.plot is not None:
        print(f"wrote {plot_record(args.plot)}")
        return 0

    cfg = UNetConfig(channels=tuple(int(c) for c in args.channels.split(",")))
    model, ema, opt, gen = setup_training(SmallUNet, cfg, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"training {n_params} parameters at {args.size}x{args.size}, {args.minutes} min budget", flush=True)

    def batch_loss() -> torch.Tensor:
        x0, _ = sample_batch(args.batch, args.size, gen, with_info=False)
        return v_loss(model, x0, gen)

    train_with_ema(
        model,
        ema,
        opt,
        batch_loss,
        args,
        lr_floor=0.1,
        save=lambda step, seconds, curve: _save(ema, cfg, args, step, seconds, curve),
    )
    return 0


def setup_training(model_class: type, cfg: Any, args: argparse.Namespace) -> tuple:
    """Threads and seeds from args, then (model, its EMA copy without gradients, AdamW at args.lr, the data
    generator): what the image and the video demo's training start from."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = model_class(cfg)
    ema = model_class(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    return model, ema, opt, gen


def train_with_ema(
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch_loss: Callable[[], torch.Tensor],
    args: argparse.Namespace,
    *,
    lr_floor: float,
    save: Callable[[int, float, list[dict[str, float]]], None],
) -> int:
    """The demos' training loop; returns the number of steps run.

    Runs until args.minutes of budget or args.max_steps: learning rate
    args.lr * min(1, (step + 1) / 200) * (lr_floor + (1 - lr_floor) (1 + cos(pi * spent / budget)) / 2).
    The budget is wall time, or with args.budget == "cpu" (if present) the process' CPU time: on a shared
    machine a one-thread run then does the same work whatever the load.
    gradient norm clipped to 1, EMA decay min(args.ema, (1 + step) / (10 + step)); logs the mean loss every 50
    steps and calls save(step, seconds, curve) every 500 steps and at the end.
    """
    curve: list[dict[str, float]] = []
    clock = time.process_time if getattr(args, "budget", "wall") == "cpu" else time.time
    t0, c0 = time.time(), clock()
    acc, acc_n, step = 0.0, 0, 0
    budget = args.minutes * 60
    while step < args.max_steps and clock() - c0 < budget:
        frac = (clock() - c0) / budget
        lr = (
            args.lr
            * min(1.0, (step + 1) / 200)
            * (lr_floor + (1 - lr_floor) * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        step += 1
        acc += float(loss.detach())
        acc_n += 1
        if step % 50 == 0:
            elapsed = time.time() - t0
            point = {"step": step, "seconds": round(elapsed, 1), "loss": acc / acc_n, "lr": lr}
            if clock is not time.time:
                point["cpu_seconds"] = round(clock() - c0, 1)
            curve.append(point)
            print(f"step {step} t={elapsed:.0f}s loss={acc / acc_n:.4f} lr={lr:.2e}", flush=True)
            acc, acc_n = 0.0, 0
            if step % 500 == 0:
                save(step, time.time() - t0, curve)
    save(step, time.time() - t0, curve)
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {args.out}", flush=True)
    return step


def plot_record(record_path: Path) -> Path:
    """Draw the loss curve of a training record (JSON) as a PNG beside it (training_loss.png)."""
    from .images import line_plot

    rec = json.loads(Path(record_path).read_text())
    curve = rec["loss_curve"]
    xs = [c["step"] for c in curve]
    title = (
        f"demo model: v-prediction MSE, {rec['steps']} steps of {rec['batch']} images "
        f"({rec['size']}px), {rec['train_seconds'] / 60:.0f} min on {rec['threads']} CPU thread(s), seed {rec['seed']}"
    )
    return line_plot(
        {"loss (mean of 50 steps)": (xs, [c["loss"] for c in curve])},
        Path(record_path).with_name("training_loss.png"),
        title=title,
        xlabel="step",
        ylabel="loss",
        logy=True,
        size=(760, 360),
    )


def _save(
    ema: SmallUNet,
    cfg: UNetConfig,
    args: argparse.Namespace,
    step: int,
    seconds: float,
    curve: list[dict[str, float]],
) -> None:
    command = "python -m lib_upsample_guidance.demo.train " + " ".join(sys.argv[1:])
    meta = config_to_metadata(cfg)
    meta.update(
        {
            "base_size": str(args.size),
            "seed": str(args.seed),
            "steps": str(step),
            "train_seconds": f"{seconds:.0f}",
            "objective": "v-prediction, cosine VP schedule",
            "command": command,
        }
    )
    record = {
        "command": command,
        "seed": args.seed,
        "size": args.size,
        "batch": args.batch,
        "lr": args.lr,
        "ema": args.ema,
        "threads": args.threads,
        "steps": step,
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in ema.parameters()),
        "loss_curve": curve,
    }
    save_ema(ema, meta, args.out, record, args.record)


def save_ema(ema: torch.nn.Module, meta: dict[str, str], out: Path, record: dict, record_path: Path) -> None:
    """Write the EMA weights as fp16 safetensors with `meta`, and the training record as JSON."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in ema.state_dict().items()}
    save_file(sd, str(out), metadata=meta)
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())

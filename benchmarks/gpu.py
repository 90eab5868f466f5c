"""Training and inference speed of the default MRI network on the CPU and on CUDA, with and without
mixed precision.

The network is ``mri_x2``'s (``residual``, 32 features, 6 blocks, 3D, k-space x2 with the Fourier
skip). Training is timed on random patches (forward, L1 loss, backward, Adam step) at the recipe's
CPU settings (32^3 high-resolution patches, batch 4) and at its ``gpu`` settings (64^3, batch 16);
inference is :func:`aesr_sci.infer.predict` over a BRATS-sized volume (120 x 120 x 78 in, 240 x 240
x 156 out) in the model's 48^3 windows. Mixed precision is compared with float32 on the same input
(PSNR of the difference over the output's range), so the speed-up is not bought with accuracy.
Rows for a device that is absent are left out.

Usage::

    python benchmarks/gpu.py [--threads 2] [--seconds 10] [--out table.md]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _report import emit

from aesr_sci.infer import predict
from aesr_sci.nets import build_model


def _net(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model(
        "residual", spatial_dims=3, in_channels=1, scale=2, convention="origin", features=32, blocks=6
    )
    return net.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_speed(device: str, amp: bool, patch: int, batch: int, seconds: float) -> tuple[float, float]:
    """Training steps per second and the peak GPU memory (GiB; 0 on the CPU)."""
    net = _net(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    lq = torch.rand(batch, 1, patch // 2, patch // 2, patch // 2, device=device, generator=gen)
    gt = torch.rand(batch, 1, patch, patch, patch, device=device, generator=gen)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=amp):
            loss = F.l1_loss(net(lq).float(), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # cuDNN autotuning, oneDNN primitive creation
        step()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
        if device == "cuda" and n % 10 == 0:
            _sync(device)
    _sync(device)
    rate = n / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return rate, peak


def infer_speed(device: str, amp: bool, lq: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds for one volume (best of two) and the output."""
    net = _net(device).eval()
    best, out = math.inf, None
    with torch.inference_mode():
        for _ in range(2):
            _sync(device)
            start = time.perf_counter()
            out = predict(
                net, lq, patch_size=[48, 48, 48], device=device, precision="auto" if amp else "float32"
            )
            _sync(device)
            best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed training seconds per row")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU rows (they are slow)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ([] if args.no_cpu else [("cpu", False)]) + (
        [("cuda", False), ("cuda", True)] if torch.cuda.is_available() else []
    )
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    lines = [
        f"torch {torch.__version__}, GPU: {name}, CPU threads: {args.threads}",
        "",
        "| device | precision | patch (HR) x batch | train steps/s | HR voxels/s (train) | peak GPU memory (GiB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    base = None
    for patch, batch in ((32, 4), (64, 16)):
        for device, amp in devices:
            if device == "cpu" and patch == 64:
                continue  # minutes per step on 2 cores
            rate, peak = train_speed(device, amp, patch, batch, args.seconds)
            voxels = rate * batch * patch**3
            base = base or voxels
            lines.append(
                f"| {device} | {'bf16 autocast' if amp else 'float32'} | {patch}^3 x {batch} | {rate:.2f} | "
                f"{voxels / 1e6:.2f} M ({voxels / base:.0f}x) | {peak:.2f} |"
            )
            print(lines[-1], flush=True)
    lines += [
        "",
        "| device | precision | 240x240x156 volume (s) | speed-up | PSNR against float32 CPU (dB) |",
        "|---|---|---:|---:|---:|",
    ]
    lq = torch.rand(1, 1, 120, 120, 78, generator=torch.Generator().manual_seed(2))
    ref, t_ref = None, None
    for device, amp in devices:
        seconds, out = infer_speed(device, amp, lq)
        if ref is None:
            ref, t_ref = out, seconds
            psnr = "reference"
        else:
            err = float((out - ref).pow(2).mean())
            psnr = f"{10 * math.log10(float(ref.max() - ref.min()) ** 2 / max(err, 1e-30)):.1f}"
        lines.append(
            f"| {device} | {'fp16 autocast' if amp else 'float32'} | {seconds:.2f} | {t_ref / seconds:.0f}x | {psnr} |"
        )
        print(lines[-1], flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())

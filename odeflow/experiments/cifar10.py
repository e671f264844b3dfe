"""The CIFAR-10 study: the ODE-only net (and the MNIST study's ODE-Net and ResNet) on
3×32×32 colour images.

``odeflow train cifar10 [flags]`` is :func:`main`. The defaults are the assignment's:

- network ``odeonly``: Conv2d(3, 128, 4, stride 2, pad 1) → ODE block (GN → ReLU →
  concat t → Conv 3×3 → GN → ReLU → concat t → Conv 3×3 → GN) integrated by classic RK4
  at step 0.1 on [0, 1] → GN → AdaptiveAvgPool → Dropout(0.5) → Linear(128, 10),
  306,058 parameters; ``--adaptive True`` integrates the block with ``--method``
  (dopri5) at ``--tol`` instead; ``--network odenet|resnet`` are the MNIST study's models;
- SGD, lr 0.1 (× batch/128), momentum 0.9, weight decay 1e-4, batches of 128;
- the rate ×0.1 when the validation accuracy has not improved for 15 epochs
  (ReduceLROnPlateau's rule, :func:`odeflow.training.plateau_lr`); the validation split
  is the last ``--val-samples`` (5,000) of the 50,000 training images, held out of
  training;
- augmentation: random crop 32 after zero padding 4, horizontal flip, a slight colour
  jitter (brightness, contrast, saturation ×[0.9, 1.1]); every image is normalised with
  CIFAR-10's channel means and standard deviations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    BatchLoader,
    color_jitter,
    load_cifar10,
    normalize,
    random_hflip,
)
from ..nn import build_classifier, count_parameters, odeonly
from ..training import ConfigError, DistEnv, lr_at, plateau_lr
from .config import (
    NON_NEGATIVE,
    POSITIVE,
    SOLVER,
    RunFlags,
    at_least,
    between,
    opt,
    parse_run_config,
)
from .epochs import check_device, report, resolve_gradient, run_epochs, select_device

__all__ = ["CIFAR10Config", "CIFAR10_NETWORKS", "default_run_dir", "build", "run", "main"]

CIFAR10_NETWORKS = ("odeonly", "odenet", "resnet")


@dataclass
class CIFAR10Config(RunFlags):
    """Every setting of one CIFAR-10 run; each field is a command-line flag."""

    # which classifier: the ODE-only net, or the MNIST study's ODE-Net / ResNet
    network: str = opt("odeonly", "classifier", choices=CIFAR10_NETWORKS, model=True)
    # channels of the feature maps (128 in the assignment)
    width: int = opt(128, "feature channels", model=True, check=at_least(1))
    # odenet / resnet only: how the image is downsampled
    downsampling_method: str = opt(
        "conv", "downsampling layers of odenet/resnet", choices=("conv", "res"), model=True
    )
    # odeonly: fixed RK4 grid (False) or an adaptive solver (True)
    adaptive: bool = opt(False, "odeonly: integrate with --method at --tol, not RK4 steps")
    # the adaptive solver (odeonly with --adaptive, and odenet always)
    method: str = opt("dopri5", "adaptive ODE solver", check=SOLVER)
    # rtol = atol of the adaptive solver
    tol: float = opt(1e-3, "tolerance (rtol = atol) of the adaptive solver", check=POSITIVE)
    # odeonly's classic RK4 step on [0, 1]
    step_size: float = opt(0.1, "odeonly: classic RK4 step size", model=True, check=POSITIVE)
    # total epochs (a resumed run continues up to this number)
    nepochs: int = opt(100, "number of epochs", check=at_least(1))
    # base rate for batches of 128; the rate used is lr × batch_size / 128
    lr: float = opt(0.1, "learning rate for batch 128 (scaled linearly with the batch)",
                    check=POSITIVE)
    # SGD momentum
    momentum: float = opt(0.9, "SGD momentum", check=NON_NEGATIVE)
    # L2 penalty
    weight_decay: float = opt(1e-4, "SGD weight decay", check=NON_NEGATIVE)
    # bad epochs (no better validation accuracy) before the rate is reduced
    plateau_patience: int = opt(15, "epochs without a better validation accuracy before lr decays",
                                check=NON_NEGATIVE)
    # multiplier at each reduction
    plateau_factor: float = opt(0.1, "lr multiplier at each plateau",
                                check=between(0, 1, low_open=True))
    # images held out of the end of the training set to drive the plateau rule
    val_samples: int = opt(5000, "validation images held out of the training set (0: watch test)",
                           check=NON_NEGATIVE)
    # crop + flip + colour jitter
    data_aug: bool = opt(True, "random crop (padding 4), horizontal flip, colour jitter")
    # spread of the brightness / contrast / saturation factors
    jitter: float = opt(0.1, "colour jitter strength (factors in [1 - j, 1 + j])",
                        check=between(0, 1))
    # global batch size (split over ranks under torchrun)
    batch_size: int = opt(128, "training batch size (global)", check=at_least(1))
    # evaluation batch size
    test_batch_size: int = opt(1000, "evaluation batch size", check=at_least(1))
    # folder with cifar-10-batches-bin (or the archive)
    data_dir: str = opt("data", "folder holding CIFAR-10's binary batches (or the .tar.gz)")
    # fetch the archive (MD5-checked) when the batches are missing
    download: bool = opt(False, "download cifar-10-binary.tar.gz (checked by MD5)")
    # use only the first N training samples (0 = all), after the validation split
    max_train_samples: int = opt(0, "use only the first N training samples (0 = all)",
                                 check=NON_NEGATIVE)
    # use only the first N test samples (0 = all)
    max_test_samples: int = opt(0, "use only the first N test samples (0 = all)",
                                check=NON_NEGATIVE)
    # GPU index used when --device is auto
    gpu: int = opt(0, "GPU index (with --device auto)", check=NON_NEGATIVE)
    # "auto" = cuda:<gpu> when available, else cpu
    device: str = opt("auto", "device: auto, cpu, cuda, cuda:N")
    # CI smoke test: 1 epoch of 2 batches
    dry_run: bool = opt(False, "one epoch of two train, validation and test batches")
    # accuracy / NFE figures at the end
    plots: bool = opt(True, "write accuracy.png and nfe.png into the run folder")


    def validate(self) -> None:
        """Rules between flags (:func:`~odeflow.experiments.config.check_config`)."""
        check_device(self)


def default_run_dir(cfg: CIFAR10Config) -> Path:
    """``runs/cifar10-<network>[-<gradient>]`` unless ``--save`` names a folder."""
    if cfg.save:
        return Path(cfg.save)
    suffix = f"-{resolve_gradient(cfg)}" if cfg.network != "resnet" else ""
    return Path("runs") / f"cifar10-{cfg.network}{suffix}"


def _model(cfg: CIFAR10Config) -> torch.nn.Module:
    if cfg.network == "odeonly":
        return odeonly(
            in_channels=3,
            num_classes=10,
            dim=cfg.width,
            method=cfg.method if cfg.adaptive else "rk4_classic",
            step_size=None if cfg.adaptive else cfg.step_size,
            tol=cfg.tol,
            gradient=resolve_gradient(cfg),
        )
    return build_classifier(
        cfg.network,
        in_channels=3,
        image_size=32,
        num_classes=10,
        dim=cfg.width,
        downsampling=cfg.downsampling_method,
        method=cfg.method,
        tol=cfg.tol,
        gradient=resolve_gradient(cfg),
    )


def _transforms(cfg: CIFAR10Config) -> tuple[Callable, Callable]:
    """(training transform, evaluation transform) of float batches in [0, 1]."""

    def evaluate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return normalize(x, CIFAR10_MEAN, CIFAR10_STD)

    def train(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if cfg.data_aug:
            x = random_hflip(x, generator=gen)
            if cfg.jitter:
                x = color_jitter(x, cfg.jitter, cfg.jitter, cfg.jitter, generator=gen)
        return normalize(x, CIFAR10_MEAN, CIFAR10_STD)

    return train, evaluate


def build(cfg: CIFAR10Config, env: DistEnv = DistEnv()) -> dict[str, Any]:  # noqa: B008
    """Data, model, optimizer and plateau schedule for ``cfg`` (no training).

    Returns:
        A dict with ``model`` (DDP-wrapped when distributed), ``optimizer``,
        ``train_loader``, ``val_loader`` (None with ``--val-samples 0``), ``test_loader``,
        ``lr_schedule``, ``device``, ``parameters``.
    """
    if cfg.batch_size % env.world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is not divisible by {env.world_size} processes"
        )
    device = select_device(cfg, env)
    train_x, train_y = load_cifar10(cfg.data_dir, "train", download_ok=cfg.download)
    test_x, test_y = load_cifar10(cfg.data_dir, "test")
    if cfg.val_samples >= len(train_y):
        raise ConfigError(
            f"--val-samples {cfg.val_samples} leaves none of the {len(train_y)} training "
            "images for training"
        )
    n_train = len(train_y) - cfg.val_samples
    val_x, val_y = train_x[n_train:], train_y[n_train:]
    train_x, train_y = train_x[:n_train], train_y[:n_train]
    if 0 < cfg.max_train_samples < n_train:
        train_x, train_y = train_x[: cfg.max_train_samples], train_y[: cfg.max_train_samples]
    if 0 < cfg.max_test_samples < len(test_y):
        test_x, test_y = test_x[: cfg.max_test_samples], test_y[: cfg.max_test_samples]

    max_batches = 2 if cfg.dry_run else 0
    train_tf, eval_tf = _transforms(cfg)
    common = {"rank": env.rank, "world_size": env.world_size, "max_batches": max_batches}
    train_loader = BatchLoader(
        train_x, train_y, cfg.batch_size // env.world_size, shuffle=True,
        crop_padding=4 if cfg.data_aug else 0, seed=cfg.seed, transform=train_tf, **common,
    )  # fmt: skip
    val_loader = (
        BatchLoader(val_x, val_y, cfg.test_batch_size, shuffle=False, transform=eval_tf, **common)
        if cfg.val_samples
        else None
    )
    test_loader = BatchLoader(
        test_x, test_y, cfg.test_batch_size, shuffle=False, transform=eval_tf, **common
    )

    torch.manual_seed(cfg.seed)
    model = _model(cfg).to(device)
    parameters = count_parameters(model)
    if env.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    base_lr = lr_at(0, cfg.lr, cfg.batch_size, ())
    optimizer = torch.optim.SGD(
        model.parameters(), lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    watch = "val_acc" if val_loader is not None else "test_acc"

    def lr_schedule(epoch: int, history: list[dict[str, float]]) -> float:
        scores = [row[watch] for row in history[:epoch]]
        return plateau_lr(scores, base_lr, factor=cfg.plateau_factor, patience=cfg.plateau_patience)

    return {
        "model": model,
        "optimizer": optimizer,
        "train_loader": train_loader,
        "val_loader": val_loader,
        "test_loader": test_loader,
        "lr_schedule": lr_schedule,
        "device": device,
        "parameters": parameters,
    }


def _describe(cfg: CIFAR10Config, parts: dict[str, Any], env: DistEnv) -> str:
    solver = (
        f"{cfg.method} tol {cfg.tol}"
        if cfg.network == "odenet" or (cfg.network == "odeonly" and cfg.adaptive)
        else f"rk4 step {cfg.step_size}"
        if cfg.network == "odeonly"
        else "no ODE"
    )
    run_dir = parts["run_dir"]
    return (
        f"{cfg.network} on cifar10: {parts['parameters']:,} parameters, {solver}, "
        f"gradient={resolve_gradient(cfg)}, device={parts['device']}, "
        f"processes={env.world_size}, run folder {run_dir}"
    )


def run(cfg: CIFAR10Config, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``cfg`` end to end; the summary of
    :func:`~odeflow.experiments.epochs.run_epochs`."""
    return run_epochs(cfg, build, default_run_dir(cfg), _describe, log)


def parse_args(
    argv: Sequence[str] | None, base: CIFAR10Config | None = None, prog: str | None = None
) -> CIFAR10Config:
    """Flags → config (``--resume RUN`` as in the MNIST study: the saved config, with
    model-changing flags refused)."""
    cfg = parse_run_config(CIFAR10Config, argv, base=base, prog=prog)
    resolve_gradient(cfg)
    return cfg


def main(
    argv: Sequence[str] | None = None,
    base: CIFAR10Config | None = None,
    prog: str | None = None,
) -> dict[str, Any]:
    """``odeflow train cifar10 [flags]``."""
    summary = run(parse_args(argv, base=base, prog=prog))
    report(summary)
    return summary

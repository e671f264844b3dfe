"""Seed A's study: ODE-Net vs ResNet (and RK-Net, MLP), backprop vs adjoint, on MNIST,
Fashion-MNIST or scikit-learn's digits.

``odeflow train mnist [flags]`` is :func:`main`; the defaults are the seed's (160 epochs,
SGD momentum 0.9, lr 0.1 × batch/128 decayed ×0.1 at 60/100/140, tol 1e-3, random crop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import DATASETS, BatchLoader, load_dataset
from ..nn import NETWORKS, build_classifier, count_parameters
from ..training import ConfigError, DistEnv, lr_at
from .config import (
    NON_NEGATIVE,
    POSITIVE,
    SOLVER,
    RunFlags,
    at_least,
    opt,
    parse_run_config,
)
from .epochs import check_device, report, resolve_gradient, run_epochs, select_device

__all__ = ["MNISTConfig", "resolve_gradient", "default_run_dir", "build", "run", "main"]


@dataclass
class MNISTConfig(RunFlags):
    """Every setting of one run; each field is a command-line flag."""

    # which images: "mnist", "fashion-mnist" (IDX files) or "digits" (bundled, no download)
    dataset: str = opt("mnist", "dataset to train on", choices=DATASETS, model=True)
    # which classifier
    network: str = opt("odenet", "classifier", choices=NETWORKS, model=True)
    # rtol = atol of the adaptive solver
    tol: float = opt(1e-3, "solver tolerance (rtol = atol) of the ODE block", check=POSITIVE)
    # adaptive solver of the ODE block
    method: str = opt("dopri5", "ODE solver of the ODE-Net's block", check=SOLVER)
    # image -> features
    downsampling_method: str = opt(
        "conv", "downsampling layers", choices=("conv", "res"), model=True
    )
    # feature channels (64 in the seed)
    width: int = opt(64, "feature channels of ODE-Net/ResNet/RK-Net", model=True, check=at_least(1))
    # RK-Net's fixed step on [0, 1]
    rk_step_size: float = opt(0.1, "RK-Net's fixed RK4 step size", model=True, check=POSITIVE)
    # total epochs (a resumed run continues up to this number)
    nepochs: int = opt(160, "number of epochs", check=at_least(1))
    # seed augmentation: random crop of 28 after zero padding by 4
    data_aug: bool = opt(True, "random-crop augmentation (padding 4)")
    # base rate for batches of 128; the rate used is lr × batch_size / 128
    lr: float = opt(0.1, "learning rate for batch 128 (scaled linearly with the batch)",
                    check=POSITIVE)
    # epochs where the rate is multiplied by lr_decay
    milestones: tuple[int, ...] = opt((60, 100, 140), "epochs at which lr decays",
                                      check=NON_NEGATIVE)
    # decay factor at each milestone
    lr_decay: float = opt(0.1, "lr multiplier at each milestone", check=POSITIVE)
    # SGD momentum
    momentum: float = opt(0.9, "SGD momentum", check=NON_NEGATIVE)
    # L2 penalty
    weight_decay: float = opt(0.0, "SGD weight decay", check=NON_NEGATIVE)
    # global batch size (split over ranks under torchrun)
    batch_size: int = opt(128, "training batch size (global)", check=at_least(1))
    # evaluation batch size
    test_batch_size: int = opt(1000, "evaluation batch size", check=at_least(1))
    # folder with the IDX files
    data_dir: str = opt("data", "folder holding the MNIST / Fashion-MNIST IDX files")
    # fetch missing IDX files from the canonical mirrors
    download: bool = opt(False, "download missing IDX files (checked by SHA-256)")
    # use only the first N training samples (0 = all)
    max_train_samples: int = opt(0, "use only the first N training samples (0 = all)",
                                 check=NON_NEGATIVE)
    # use only the first N test samples (0 = all)
    max_test_samples: int = opt(0, "use only the first N test samples (0 = all)",
                                check=NON_NEGATIVE)
    # side of the upsampled digits (dataset=digits)
    digits_size: int = opt(28, "image size of the upsampled 8x8 digits", model=True,
                           check=at_least(3))
    # zero border around the upsampled digits
    digits_pad: int = opt(4, "zero border of the upsampled digits", model=True, check=NON_NEGATIVE)
    # seed flag: GPU index used when --device is auto
    gpu: int = opt(0, "GPU index (with --device auto)", check=NON_NEGATIVE)
    # "auto" = cuda:<gpu> when available, else cpu
    device: str = opt("auto", "device: auto, cpu, cuda, cuda:N")
    # CI smoke test: 1 epoch of 2 batches
    dry_run: bool = opt(False, "one epoch of two train and two test batches")
    # accuracy / NFE figures at the end
    plots: bool = opt(True, "write accuracy.png and nfe.png into the run folder")


    def validate(self) -> None:
        """Rules between flags (:func:`~odeflow.experiments.config.check_config`)."""
        if self.dataset == "digits" and self.digits_size - 2 * self.digits_pad < 1:
            raise ConfigError(f"--digits-size {self.digits_size} leaves no room for "
                              f"--digits-pad {self.digits_pad}: expected a size > 2 * pad")
        check_device(self)


def default_run_dir(cfg: MNISTConfig) -> Path:
    """``runs/<dataset>-<network>[-<gradient>]`` unless ``--save`` names a folder."""
    if cfg.save:
        return Path(cfg.save)
    suffix = f"-{resolve_gradient(cfg)}" if cfg.network == "odenet" else ""
    return Path("runs") / f"{cfg.dataset}-{cfg.network}{suffix}"


def build(cfg: MNISTConfig, env: DistEnv = DistEnv()) -> dict[str, Any]:  # noqa: B008
    """Data, model, optimizer and schedule for ``cfg`` (no training).

    Returns:
        A dict with ``model`` (DDP-wrapped when distributed), ``optimizer``,
        ``train_loader``, ``test_loader``, ``lr_fn``, ``device``, ``parameters``.
    """
    if cfg.batch_size % env.world_size:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is not divisible by {env.world_size} processes"
        )
    device = select_device(cfg, env)
    data = load_dataset(
        cfg.dataset,
        cfg.data_dir,
        download=cfg.download and env.is_main,
        max_train_samples=cfg.max_train_samples,
        max_test_samples=cfg.max_test_samples,
        digits_size=cfg.digits_size,
        digits_pad=cfg.digits_pad,
        seed=cfg.seed,
    )
    max_batches = 2 if cfg.dry_run else 0
    train_loader = BatchLoader(
        data.train_x,
        data.train_y,
        cfg.batch_size // env.world_size,
        shuffle=True,
        crop_padding=4 if cfg.data_aug else 0,
        seed=cfg.seed,
        rank=env.rank,
        world_size=env.world_size,
        max_batches=max_batches,
    )
    test_loader = BatchLoader(
        data.test_x,
        data.test_y,
        cfg.test_batch_size,
        shuffle=False,
        rank=env.rank,
        world_size=env.world_size,
        max_batches=max_batches,
    )
    torch.manual_seed(cfg.seed)
    model = build_classifier(
        cfg.network,
        in_channels=data.in_channels,
        image_size=data.image_size,
        num_classes=data.num_classes,
        dim=cfg.width,
        downsampling=cfg.downsampling_method,
        method=cfg.method,
        tol=cfg.tol,
        gradient=resolve_gradient(cfg),
        rk_step_size=cfg.rk_step_size,
    ).to(device)
    parameters = count_parameters(model)
    if env.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=lr_at(0, cfg.lr, cfg.batch_size, cfg.milestones, cfg.lr_decay),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )

    def lr_fn(epoch: int) -> float:
        return lr_at(epoch, cfg.lr, cfg.batch_size, cfg.milestones, cfg.lr_decay)

    return {
        "model": model,
        "optimizer": optimizer,
        "train_loader": train_loader,
        "test_loader": test_loader,
        "lr_fn": lr_fn,
        "device": device,
        "parameters": parameters,
    }


def _describe(cfg: MNISTConfig, parts: dict[str, Any], env: DistEnv) -> str:
    return (
        f"{cfg.network} on {cfg.dataset}: {parts['parameters']:,} parameters, "
        f"gradient={resolve_gradient(cfg)}, device={parts['device']}, "
        f"processes={env.world_size}, run folder {parts['run_dir']}"
    )


def run(cfg: MNISTConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``cfg`` end to end (joining a torchrun process group when launched by one).

    Returns:
        The summary of :func:`~odeflow.experiments.epochs.run_epochs`: ``run_dir``,
        ``parameters``, ``history``, ``test_acc`` (last epoch), ``best_acc``, mean
        ``nfe_f`` / ``nfe_b`` over epochs, ``seconds``, ``rank``, and ``model`` (unwrapped).
    """
    return run_epochs(cfg, build, default_run_dir(cfg), _describe, log)


def parse_args(
    argv: Sequence[str] | None, base: MNISTConfig | None = None, prog: str | None = None
) -> MNISTConfig:
    """Flags → config. With ``--resume RUN`` the base is ``RUN/config.json``, only the
    flags given on the command line (e.g. a larger ``--nepochs``) change it, and a flag
    that changes the model (``--network``, ``--width``, ...) is refused.

    Raises:
        RunFolderError: ``--resume`` of a folder without a readable ``config.json``.
        ResumeMismatchError: ``--resume`` with a model-changing flag.
        ConfigError: contradictory flags.
    """
    cfg = parse_run_config(MNISTConfig, argv, base=base, prog=prog)
    resolve_gradient(cfg)
    return cfg


def main(
    argv: Sequence[str] | None = None,
    base: MNISTConfig | None = None,
    prog: str | None = None,
) -> dict[str, Any]:
    """``odeflow train mnist|fashion-mnist|digits [flags]``."""
    cfg = parse_args(argv, base=base, prog=prog)
    summary = run(cfg)
    report(summary)
    return summary

"""Training: DDP processes, mixed precision, validation, checkpoints and resume.

`run(config)` trains in this process, or starts `gpus` local processes, or joins a
torchrun job (RANK / WORLD_SIZE in the environment). Only rank 0 writes files.
"""
import json
import math
import os
import pathlib
import random
import socket
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import data as data_module
from .checkpoint import CheckpointError, atomic_save
from .images import read_image, to_tensor, to_uint8
from .inference import upscale
from .metrics import psnr
from .model import CSNLN
from .plot import plot_history

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why."""


def run(config):
    """Entry point of train.py."""
    if "WORLD_SIZE" in os.environ:  # started by torchrun: env:// rendezvous
        _worker(int(os.environ.get("LOCAL_RANK", 0)), config, int(os.environ["WORLD_SIZE"]), False)
    elif config["gpus"] > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        mp.spawn(_worker, args=(config, config["gpus"], True), nprocs=config["gpus"], join=True)
    else:
        _worker(0, config, 1, False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _device(config, local_rank):
    wanted = config["device"]
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda asked for, but no CUDA GPU is visible")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _precision(config, device):
    precision = config["precision"]
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a CUDA device; use --precision fp32 or bf16 on CPU")
    return precision


def _worker(local_rank, config, world, spawned):
    if world > 1:
        if spawned:
            os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
        device = _device(config, local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    else:
        device = _device(config, local_rank)
    try:
        Trainer(config, device).fit()
        if dist.is_initialized():
            dist.barrier()  # no rank tears gloo down while a peer still talks to it
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def milestones(decay):
    """'200' or '200-400-600' -> [200] or [200, 400, 600] (epochs)."""
    try:
        return [int(x) for x in str(decay).split("-")]
    except ValueError:
        raise TrainingError(f"decay must be epochs like 200 or 200-400-600, got {decay!r}") from None


class Trainer:
    """One training process: model, optimiser, data, and the epoch loop."""

    def __init__(self, config, device):
        self.config, self.device = config, device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        if config["batch_size"] % self.world:
            raise TrainingError(f"batch_size {config['batch_size']} must divide evenly across {self.world} processes")
        self.precision = _precision(config, device)
        self.save_dir = pathlib.Path(config["save"])
        _seed_everything(config["seed"])
        self.model = CSNLN(scale=config["scale"], n_feats=config["n_feats"], depth=config["depth"],
                           n_colors=config["n_colors"], rgb_range=config["rgb_range"],
                           attention_backend=config["attention_backend"],
                           checkpoint_sem=config["checkpoint_sem"]).to(device)
        # with one recurrence the cell's down-projection output is never used: its weights get no gradient
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=config["depth"] == 1)
                    if self.world > 1 else self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"], betas=tuple(config["betas"]),
                                          eps=config["epsilon"], weight_decay=config["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones(config["decay"]),
                                                              config["gamma"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.ema = ({k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if config["ema_decay"] > 0 else None)
        self.epoch, self.iteration, self.best_psnr, self.history = 0, 0, -math.inf, []
        self.bad_steps = self.skipped_steps = 0
        self.dataset = data_module.training_set(config, npy_dir=self.save_dir / "cache")
        self.sampler = DistributedSampler(self.dataset, self.world, self.rank, shuffle=True, seed=config["seed"])
        self.loader = DataLoader(self.dataset, batch_size=config["batch_size"] // self.world, sampler=self.sampler,
                                 num_workers=config["n_threads"], pin_memory=device.type == "cuda",
                                 drop_last=True, persistent_workers=False)
        self._resume()

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_dir(self):
        return self.save_dir / "checkpoints"

    def _checkpoints(self):
        return sorted(self.checkpoint_dir.glob("epoch_*.pt"))

    def _resume(self):
        wanted = self.config["resume"]
        if not wanted:
            return
        if wanted == "auto":
            found = self._checkpoints()
            if not found:
                if self.rank == 0:
                    print(f"resume auto: no checkpoint in {self.checkpoint_dir}, starting fresh")
                return
            path = found[-1]
        else:
            path = pathlib.Path(wanted)
        if not path.is_file():
            raise CheckpointError(f"checkpoint to resume not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.best_psnr, self.history = state["best_psnr"], state["history"]
        _set_rng_state(state["rng"])
        if self.rank == 0:
            print(f"resumed from {path} (epoch {self.epoch}, iteration {self.iteration})")

    def _save(self, is_best):
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "ema": self.ema, "epoch": self.epoch, "iteration": self.iteration,
                 "best_psnr": self.best_psnr, "history": self.history, "config": self.config,
                 "rng": _rng_state()}
        atomic_save(state, self.checkpoint_dir / f"epoch_{self.epoch:04d}.pt")
        for old in self._checkpoints()[:-self.config["keep_checkpoints"]]:
            old.unlink()
        weights = self._eval_weights()
        atomic_save(weights, self.save_dir / "model_latest.pt")
        if is_best:
            atomic_save(weights, self.save_dir / "model_best.pt")

    def _eval_weights(self):
        """The original-layout state dict that is validated and exported (the EMA if enabled)."""
        return {k: v.detach().cpu() for k, v in (self.ema or self.model.state_dict()).items()}

    # -- training ----------------------------------------------------------------------
    def fit(self):
        config = self.config
        if self.rank == 0:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            n_params = sum(p.numel() for p in self.model.parameters())
            print(f"CSNLN x{config['scale']}: {n_params:,} parameters, {self.world} process(es) on "
                  f"{self.device.type}, precision {self.precision}, {len(self.dataset.pairs)} training images")
        while self.epoch < config["epochs"]:
            loss = self._train_epoch()
            self.epoch += 1
            self.scheduler.step()
            scores = self._validate()
            psnr_mean = float(np.mean(list(scores.values()))) if scores else -math.inf
            is_best = psnr_mean > self.best_psnr
            self.best_psnr = max(self.best_psnr, psnr_mean)
            record = {"epoch": self.epoch, "iteration": self.iteration, "loss": loss,
                      "lr": self.optimizer.param_groups[0]["lr"], "psnr": scores,
                      "skipped_steps": self.skipped_steps, "time": time.time()}
            self.history.append(record)
            if self.rank == 0:
                self._log(record)
                self._save(is_best)
                plot_history(self.history, self.save_dir / "curves.png")
                print(f"epoch {self.epoch}: loss {loss:.5f}, " +
                      ", ".join(f"{k} {v:.3f} dB" for k, v in scores.items()))
            if self.world > 1:
                dist.barrier()

    def _train_epoch(self):
        config, model = self.config, self.ddp
        model.train()
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        dtype = PRECISIONS[self.precision]
        total, count = torch.zeros((), dtype=torch.float64), 0
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{config['epochs']}", disable=self.rank != 0,
                   dynamic_ncols=True, leave=False)
        for lr, hr in bar:
            lr, hr = lr.to(self.device, non_blocking=True), hr.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.l1_loss(model(lr).float(), hr)
            if not self._all_finite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._update_ema()
            self.iteration += 1
            value = loss.detach().double()
            if self.world > 1:
                dist.all_reduce(value)
                value /= self.world
            total += value.cpu()
            count += 1
            if self.rank == 0 and self.iteration % config["print_every"] == 0:
                bar.set_postfix(loss=f"{value.item():.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                self._log({"iteration": self.iteration, "epoch": self.epoch + count / len(self.loader),
                           "train_loss": value.item()})
        bar.close()
        return (total / max(count, 1)).item()

    def _all_finite(self, loss):
        """True if every process's loss is finite; counts skips and stops when they persist."""
        flag = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if flag.item():
            self.bad_steps = 0
            return True
        self.bad_steps += 1
        self.skipped_steps += 1
        if self.bad_steps > self.config["max_bad_steps"]:
            raise TrainingError(f"{self.bad_steps} consecutive non-finite losses at iteration {self.iteration}: "
                                "lower lr, try --precision fp32/bf16, or resume from an earlier checkpoint")
        return False

    @torch.no_grad()
    def _update_ema(self):
        if self.ema is None:
            return
        decay = self.config["ema_decay"]
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    @torch.no_grad()
    def _validate(self):
        """Rank 0: mean PSNR per test set ({'Set5': 31.2}); other ranks return {}."""
        if self.rank != 0 or not self.config["data_test"]:
            return {}
        config = self.config
        model = CSNLN(scale=config["scale"], n_feats=config["n_feats"], depth=config["depth"],
                      n_colors=config["n_colors"], rgb_range=config["rgb_range"],
                      attention_backend=config["attention_backend"]).to(self.device)
        model.load_state_dict(self._eval_weights())
        model.eval()
        scores = {}
        for name in config["data_test"].split("+"):
            values = []
            for hr_path, lr_path in data_module.evaluation_pairs(config, name):
                hr, lr = read_image(hr_path), read_image(lr_path)
                x = to_tensor(lr, config["rgb_range"])[None].to(self.device)
                sr = upscale(model, x, config["scale"], chop=config["chop"],
                             precision=self.precision)
                sr = to_uint8(sr[0], config["rgb_range"])
                hr = data_module.crop_hr_to_lr(hr, lr, config["scale"])
                values.append(psnr(sr, hr, shave=config["scale"], metric=config["metric"]))
            scores[name] = float(np.mean(values))
        return scores

    def _log(self, record):
        with open(self.save_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

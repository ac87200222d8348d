"""Training: DDP processes, mixed precision, validation, checkpoints and resume.

`run(config)` checks everything it can (`prepare`), then trains in this process, or starts
`gpus` local processes, or joins a torchrun job of one or more machines (RANK / WORLD_SIZE in the
environment), whose processes prepare together and resume by themselves when torchrun restarts
them. Only rank 0 writes files. Validation is `csnln.evaluate`'s, so a checkpoint's validation
PSNR is what eval.py measures on the same set.
"""
import functools
import itertools
import json
import logging
import math
import os
import pathlib
import random
import socket
import sys
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import data as data_module
from . import launch
from .checkpoint import CheckpointError, atomic_save, training_state
from .config import ConfigError, UserError, milestones, validate
from .evaluate import NetworkUpscaler, dataset_images, evaluate_dataset
from .files import atomic_write, remove_stale_temps, writable_dir
from .inference import (check_runnable, inference_precision, memory_format, peak_memory_mb, pick_device,
                        reset_peak_memory, set_cudnn_benchmark, use_channels_last)
from .model import CSNLN
from .plot import plot_history
from .scalars import ScalarLog

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
MODEL_KEYS = ("scale", "n_feats", "depth", "n_colors", "rgb_range")  # a resumed run cannot change these
RUN_FILES = ("model_latest.pt", "model_best.pt", "log.jsonl", "curves.png")
TENSORBOARD_DIR = "tensorboard"   # under save, when the tensorboard package is installed


class TrainingError(UserError, RuntimeError):
    """Training cannot go on; the message says why."""


def run(config, explicit=None):
    """Entry point of train.py. `explicit`: the keys the user set (None: all of them), which
    override a resumed checkpoint's stored configuration."""
    if "WORLD_SIZE" not in os.environ and config["gpus"] > 1:
        config = prepare(config, explicit)   # once, before the processes start
        if config is None:
            return
        if pick_device(config["device"]).type != "cuda":
            print(f"--gpus {config['gpus']} without CUDA: {config['gpus']} CPU processes with gloo (as "
                  f"torchrun --nproc_per_node {config['gpus']} train.py would start); output from rank 0 only")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "terminating process ..."
        try:
            mp.spawn(_worker, args=(config, config["gpus"], True), nprocs=config["gpus"], join=True)
        except mp.ProcessExitedException as e:  # the process has said why (see _worker)
            raise SystemExit(e.exit_code) from None
    else:  # this process alone, or one of a torchrun job (env:// rendezvous): it prepares itself
        _worker(int(os.environ.get("LOCAL_RANK", 0)), config, int(os.environ.get("WORLD_SIZE", 1)), False, explicit)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _device(config, local_rank):
    device = pick_device(config["device"])
    if device.type == "cuda":   # a local rank past the GPUs shares one until prepare() refuses the job
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _backend(device):
    """Process-group backends: gloo, and NCCL for CUDA tensors (CPU tensors and objects still go through gloo)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def _precision(config, device):
    """The training precision: "auto" means fp16 on CUDA, fp32 elsewhere."""
    precision = config["precision"]
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return precision


# -- before the first iteration -------------------------------------------------------------
def prepare(config, explicit=None):
    """Check what can be checked before training (device, precision, save folder, resume
    checkpoint, validation sets) -> the run's configuration, or None when a resumed run has
    nothing left to do. A fresh run refuses a save folder that holds another run unless
    `overwrite`; a resumed one takes the checkpoint's configuration, `explicit` keys overriding it."""
    rank0 = int(os.environ.get("RANK", 0)) == 0
    fresh = not config["resume"]
    device = pick_device(config["device"])
    check_runnable(_precision(config, device), config["attention_backend"], device)
    if config["cuda_graphs"] and device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device, not {device}; drop --cuda_graphs")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", config["gpus"]))
    if device.type == "cuda" and local > torch.cuda.device_count():
        asked = f"torchrun --nproc_per_node {local}" if launch.under_torchrun() else f"--gpus {local}"
        raise ConfigError(f"{asked} needs {local} GPUs, and this machine has {torch.cuda.device_count()}; "
                          f"give at most {torch.cuda.device_count()}")
    if config["resume"]:
        path, state = _resume_point(config)
        if path is None:
            config = dict(config, resume="")
        else:
            config = _resumed_config(config, explicit, state, path, rank0)
            if state["epoch"] >= config["epochs"]:
                if rank0:
                    print(f"train.py: nothing left to do: {path} finished epoch {state['epoch']} of "
                          f"{config['epochs']}; give a larger --epochs to train longer")
                return None
    world = int(os.environ.get("WORLD_SIZE", config["gpus"]))
    if config["batch_size"] % world:
        raise ConfigError(f"batch_size {config['batch_size']} must divide evenly across {world} processes")
    save = writable_dir(config["save"], "--save")
    if fresh and rank0:
        _claim(save, config["overwrite"])
    for name in filter(None, config["data_test"].split("+")):
        dataset_images(config["data_path"], name, config["scale"], config["data_range"])
    return config


def _claim(save, overwrite):
    """Refuse a fresh run in a folder holding another run's checkpoints, or delete that run's files
    with `overwrite`. The files of a run stopped before its first checkpoint are deleted: repeating
    its command starts it again."""
    found = (sorted((save / "checkpoints").glob("epoch_*.pt")) + [save / n for n in RUN_FILES if (save / n).exists()]
             + sorted((save / TENSORBOARD_DIR).glob("events.out.tfevents.*")))
    if not overwrite and any(p.suffix == ".pt" for p in found):
        raise ConfigError(f"{save} already holds a run ({', '.join(p.name for p in found[:4])}"
                          f"{', ...' if len(found) > 4 else ''}): continue it with --resume auto, "
                          "choose another --save, or add --overwrite to replace it")
    for path in found:
        path.unlink()


def _resume_point(config):
    """-> (checkpoint path, its state): the given file, or with "auto" the newest readable
    checkpoint in save/checkpoints (unreadable newer ones are named and skipped); (None, None)
    when "auto" finds none."""
    if config["resume"] != "auto":
        return pathlib.Path(config["resume"]), training_state(config["resume"])
    folder = pathlib.Path(config["save"]) / "checkpoints"
    found = sorted(folder.glob("epoch_*.pt"), reverse=True)
    for path in found:
        try:
            return path, training_state(path)
        except CheckpointError as e:
            print(f"train.py: warning: {e}; trying an older one", file=sys.stderr)
    if found:
        raise CheckpointError(f"no readable checkpoint in {folder}; give one with --resume PATH or start "
                              "afresh with --overwrite")
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"resume auto: no checkpoint in {folder}, starting fresh")
    return None, None


def _resumed_config(config, explicit, state, path, verbose):
    """The checkpoint's stored configuration with the `explicit` keys of `config` over it."""
    stored = {k: v for k, v in state["config"].items() if k in config and k not in ("resume", "overwrite")}
    keys = set(config) if explicit is None else set(explicit)
    merged = {**config, **stored, **{k: config[k] for k in keys}, "resume": str(path)}
    changed = {k: (stored[k], merged[k]) for k in stored if stored[k] != merged[k]}
    fixed = [f"{k} {old} (not {new})" for k, (old, new) in changed.items() if k in MODEL_KEYS]
    if fixed:
        raise ConfigError(f"{path} is a model with {', '.join(fixed)}; a resumed run keeps its model")
    validate(merged)
    if verbose:
        print(f"resuming {path} (epoch {state['epoch']}, iteration {state['iteration']}) with its stored options"
              + ("; changed: " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
                 if changed else ""))
    return merged


def _worker(local_rank, config, world, spawned, explicit=None):
    """One training process of `world`. One started by mp.spawn gets a prepared configuration; the
    others prepare it (a torchrun job's processes together). Local rank 0 says why it stops, once
    a machine: train.py's line for an error or Ctrl-C (the other local ranks exit quietly)."""
    if local_rank > 0 or int(os.environ.get("RANK", 0)) > 0:
        warnings.filterwarnings("ignore")  # rank 0 says it once
    try:
        device = _device(config, local_rank)
        if world > 1:
            if spawned:
                os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
            dist.init_process_group(_backend(device), init_method="env://")
        restarts = 0 if spawned else _restarts(world)
        if restarts and not config["resume"]:
            config = dict(config, resume="auto")   # the run torchrun restarted goes on from its newest checkpoint
        if not spawned:
            config = _prepare_together(config, explicit) if world > 1 else prepare(config, explicit)
        if config is not None:
            Trainer(config, device, restarts).fit()
        if dist.is_initialized():
            dist.barrier()  # no rank tears gloo down while a peer still talks to it
    except (UserError, KeyboardInterrupt) as e:
        if local_rank == 0 and not spawned:
            raise
        if local_rank == 0 and isinstance(e, UserError):  # one line, as train.py prints it
            print(f"train.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, UserError) else 130) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _restarts(world):
    """How many times torchrun has restarted the job: the most any process was told (an agent that
    restarts its processes for another machine's failure may not count it)."""
    count = torch.tensor([launch.torchrun_restarts()])
    if world > 1:
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
    if launch.restarts_share_a_store() and not count.item() and int(os.environ["RANK"]) == 0:
        print("train.py: warning: torchrun would restart the processes with the store of their predecessors, "
              "where they can find the predecessors' addresses and hang or fail (pytorch/pytorch#135712); "
              "start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment", file=sys.stderr)
    return int(count.item())


def _prepare_together(config, explicit):
    """prepare() on every process of a torchrun job -> the configuration, or None when there is
    nothing left to do. All stop when one cannot go on, or when one would resume another checkpoint
    than rank 0 (its machine sees another `save` folder)."""
    try:
        prepared, error = prepare(config, explicit), None
    except UserError as e:
        prepared, error = None, " ".join(str(e).split())
    # the checkpoint each resumes: its name, "" for a fresh start, None when finished
    resumed = None if prepared is None else pathlib.Path(prepared["resume"]).name
    outcomes = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, (error, resumed, socket.gethostname()))
    places = [f"rank {rank} on {host}" for rank, (_, _, host) in enumerate(outcomes)]
    failed = [(place, error) for place, (error, _, _) in zip(places, outcomes) if error]
    if failed:
        place, error = failed[0]
        raise TrainingError(error if len(failed) == len(outcomes) else f"{place}: {error}")
    if len({name for _, name, _ in outcomes}) > 1:
        views = [f"{place} " + ("has finished" if name is None else f"resumes {name}" if name else "starts fresh")
                 for place, (_, name, _) in zip(places, outcomes)]
        raise TrainingError(f"the processes see different checkpoints in {config['save']} ({', '.join(views)}): "
                            "`save` must be on a filesystem all nodes share")
    return prepared


def match_grad_strides(model):
    """Give each parameter's gradient the parameter's strides. A 1x1 convolution's weight gradient
    can come with other strides for its size-1 dimensions (the same memory order), which DDP reports
    as "Grad strides do not match bucket view strides"."""
    for p in model.parameters():
        if p.requires_grad:
            p.register_hook(functools.partial(_restride, p.stride()))


def _restride(stride, grad):
    if grad.stride() == stride:
        return grad
    return torch.empty_strided(grad.shape, stride, dtype=grad.dtype, device=grad.device).copy_(grad)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose next epoch can start past its first `skip` items (a resume
    from a checkpoint written inside an epoch)."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return super().__len__() - self.skip


def _seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state():
    """The RNG states as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """One training process: model, optimiser, data, and the epoch loop."""

    def __init__(self, config, device, restarts=0):
        """`restarts`: how many times torchrun has restarted the job (logged when resuming)."""
        self.config, self.device, self.restarts = config, device, restarts
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.precision = _precision(config, device)
        self.save_dir = pathlib.Path(config["save"])
        _seed_everything(config["seed"])
        self.model = CSNLN(scale=config["scale"], n_feats=config["n_feats"], depth=config["depth"],
                           n_colors=config["n_colors"], rgb_range=config["rgb_range"],
                           attention_backend=config["attention_backend"],
                           checkpoint_sem=config["checkpoint_sem"])
        self.memory_format = memory_format(use_channels_last(config["channels_last"], device))
        set_cudnn_benchmark(config["cudnn_benchmark"], shapes_repeat=True)   # every step: the same shapes
        self.model.to(device, memory_format=self.memory_format)
        if self.world > 1:
            match_grad_strides(self.model)
        # with one recurrence the cell's down-projection (down_sample_2/4, post_conv) never runs: no gradient
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=config["depth"] == 1)
                    if self.world > 1 else self.model)
        # cuda_graphs: inductor records each fixed-shape graph (forward, backward) after a warm-up
        # call, by which time the kernels' autotuning has run; later steps replay the recording
        self.step_model = (torch.compile(self.ddp, mode="reduce-overhead" if config["cuda_graphs"] else None)
                           if config["compile"] or config["cuda_graphs"] else self.ddp)
        self.val_model = self.val_upscaler = None   # built at the first validation, then reused
        self.scalars = None   # rank 0's TensorBoard scalars, opened by fit
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"], betas=tuple(config["betas"]),
                                          eps=config["epsilon"], weight_decay=config["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones(config["decay"]),
                                                              config["gamma"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.ema = ({k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if config["ema_decay"] > 0 else None)
        self.epoch, self.iteration, self.best_psnr, self.history = 0, 0, -math.inf, []
        self.epoch_step = 0   # steps of the current epoch already taken (a checkpoint inside an epoch)
        # the sum and number of the step losses since the last epoch record (its "loss")
        self.loss_sum, self.loss_steps = torch.zeros((), dtype=torch.float64), 0
        self.bad_steps = self.skipped_steps = 0
        self.dataset = data_module.training_set(config, npy_dir=self.save_dir / "cache")
        self.sampler = ResumableSampler(self.dataset, self.world, self.rank, shuffle=True, seed=config["seed"])
        self.local_batch = config["batch_size"] // self.world
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.loader = DataLoader(self.dataset, batch_size=self.local_batch, sampler=self.sampler,
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
        """Load the checkpoint `prepare` chose (config["resume"] is then its path)."""
        if not self.config["resume"]:
            return
        state = training_state(self.config["resume"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.epoch_step = state.get("epoch_step", 0)
        self.loss_sum, self.loss_steps = state.get("epoch_loss", (self.loss_sum, 0))
        self.best_psnr, self.history = state["best_psnr"], state["history"]
        _set_rng_state(state["rng"])

    def _save(self, is_best):
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "ema": self.ema, "epoch": self.epoch, "epoch_step": self.epoch_step, "iteration": self.iteration,
                 "epoch_loss": [self.loss_sum, self.loss_steps],
                 "best_psnr": self.best_psnr, "history": self.history, "config": self.config,
                 "rng": _rng_state()}
        # inside an epoch: epoch_0003_iter_00001234.pt sorts after epoch_0003.pt and before epoch_0004.pt
        name = f"epoch_{self.epoch:04d}" + (f"_iter_{self.iteration:08d}" if self.epoch_step else "")
        atomic_save(state, self.checkpoint_dir / f"{name}.pt")
        for old in self._checkpoints()[:-self.config["keep_checkpoints"]]:
            old.unlink()
        weights = self._eval_weights()
        atomic_save(weights, self.save_dir / "model_latest.pt")
        if is_best:
            atomic_save(weights, self.save_dir / "model_best.pt")

    def _eval_weights(self):
        """The original-layout state dict that is validated and exported (the EMA if enabled)."""
        return {k: v.detach().cpu().contiguous() for k, v in (self.ema or self.model.state_dict()).items()}

    # -- training ----------------------------------------------------------------------
    def fit(self):
        config = self.config
        self.started = time.monotonic()
        if self.rank == 0:
            self.save_dir.mkdir(parents=True, exist_ok=True)
            for folder in (self.save_dir, self.checkpoint_dir):
                remove_stale_temps(folder)
            self._truncate_log()
            if self.restarts:
                self._log({"restart": self.restarts, "iteration": self.iteration,
                           "checkpoint": pathlib.Path(config["resume"]).name, "time": time.time()})
                print(f"torchrun restart {self.restarts}: going on from iteration {self.iteration}")
            n_params = sum(p.numel() for p in self.model.parameters())
            print(f"CSNLN x{config['scale']}: {n_params:,} parameters, {self.world} process(es) on "
                  f"{self.device.type}, precision {self.precision}, {len(self.dataset.pairs)} training images")
            self.scalars = ScalarLog(self.save_dir / TENSORBOARD_DIR, self.iteration)
            if self.scalars.writer is not None:
                print(f"TensorBoard: tensorboard --logdir {self.save_dir / TENSORBOARD_DIR}")
        try:
            self._fit()
        finally:
            if self.scalars is not None:
                self.scalars.close()

    def _fit(self):
        config = self.config
        while self.epoch < config["epochs"]:
            trained = self._train_epoch()
            if self.epoch_step == self.steps_per_epoch:
                self.epoch, self.epoch_step = self.epoch + 1, 0
                self.scheduler.step()
            scores = self._validate()
            psnr_mean = float(np.mean(list(scores.values()))) if scores else -math.inf
            is_best = psnr_mean > self.best_psnr
            self.best_psnr = max(self.best_psnr, psnr_mean)
            record = {"epoch": self.epoch + self.epoch_step / self.steps_per_epoch, "iteration": self.iteration,
                      **trained,
                      "lr": self.optimizer.param_groups[0]["lr"], "psnr": scores,
                      "skipped_steps": self.skipped_steps, "time": time.time()}
            self.history.append(record)
            if self.rank == 0:
                self._log(record)
                self.scalars.add(self.iteration, {"epoch/loss": trained["loss"], "epoch/lr": record["lr"],
                                                  "epoch/step_ms": trained["step_ms"],
                                                  "epoch/peak_memory_mb": trained["peak_memory_mb"],
                                                  **{f"psnr/{name}": v for name, v in scores.items()}})
                self._save(is_best)
                plot_history(self.history, self.save_dir / "curves.png")
                line = [f"epoch {record['epoch']:.4g}: loss {trained['loss']:.5f}", f"{trained['step_ms']:.1f} ms/step"]
                if trained["peak_memory_mb"]:
                    line.append(f"peak {trained['peak_memory_mb']:.0f} MB")
                print(", ".join(line + [f"{k} {v:.3f} dB" for k, v in scores.items()]))
            if self.world > 1:
                dist.barrier()
            if self.epoch < config["epochs"] and self._out_of_time():
                if self.rank == 0:
                    print(f"max_minutes: stopped after {(time.monotonic() - self.started) / 60:.1f} minutes at "
                          f"iteration {self.iteration} (epoch {record['epoch']:.2f} of {config['epochs']}); "
                          "continue with --resume auto")
                return

    def _out_of_time(self):
        """True, on every process, once rank 0 has trained past max_minutes."""
        limit = self.config["max_minutes"]
        if not limit:
            return False
        flag = torch.tensor([int(time.monotonic() - self.started > 60 * limit)])
        if self.world > 1:
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def _train_epoch(self):
        """Train the rest of the epoch, or until max_minutes, with a checkpoint every `checkpoint_every`
        iterations -> {"loss": mean L1 since the last epoch record, "step_ms": wall
        milliseconds per step, data loading included, "peak_memory_mb": see csnln.inference.peak_memory_mb}."""
        config, model = self.config, self.step_model
        model.train()
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        self.sampler.skip = self.epoch_step * self.local_batch
        dtype = PRECISIONS[self.precision]
        count = 0
        reset_peak_memory(self.device)
        start = time.perf_counter()
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{config['epochs']}", disable=self.rank != 0,
                   dynamic_ncols=True, leave=False, initial=self.epoch_step, total=self.steps_per_epoch)
        for lr, hr in bar:
            self.epoch_step += 1
            lr, hr = (t.to(self.device, non_blocking=True, memory_format=self.memory_format) for t in (lr, hr))
            # the last step's gradients are dropped before the next replay may reuse their memory (cuda_graphs)
            self.optimizer.zero_grad(set_to_none=True)
            torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.l1_loss(model(lr).float(), hr)
            if not self._all_finite(loss):
                continue
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._update_ema()
            self.iteration += 1
            value = loss.detach().double()
            if self.world > 1:
                dist.all_reduce(value)
                value /= self.world
            self.loss_sum += value.cpu()
            self.loss_steps += 1
            count += 1
            if self.rank == 0 and self.iteration % config["print_every"] == 0:
                bar.set_postfix(loss=f"{value.item():.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                self._log({"iteration": self.iteration, "epoch": self.epoch + self.epoch_step / self.steps_per_epoch,
                           "train_loss": value.item(), "time": time.time()})
                self.scalars.add(self.iteration, {"train/loss": value.item(),
                                                  "train/lr": self.optimizer.param_groups[0]["lr"]})
            every = config["checkpoint_every"]
            if self.rank == 0 and every and self.iteration % every == 0 and self.epoch_step < self.steps_per_epoch:
                self._save(is_best=False)
            if self.epoch_step < self.steps_per_epoch and self._out_of_time():
                break
        bar.close()
        self.sampler.skip = 0
        loss = (self.loss_sum / max(self.loss_steps, 1)).item()
        self.loss_sum, self.loss_steps = torch.zeros_like(self.loss_sum), 0
        return {"loss": loss, "step_ms": 1e3 * (time.perf_counter() - start) / max(count, 1),
                "peak_memory_mb": peak_memory_mb(self.device)}

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
        """Rank 0: mean PSNR per test set ({'Set5': 31.2}), measured as eval.py does; other ranks: {}."""
        config = self.config
        if self.rank != 0 or not config["data_test"]:
            return {}
        if self.val_model is None:   # one model for every validation: compiled once with `compile`
            self.val_model = CSNLN(scale=config["scale"], n_feats=config["n_feats"], depth=config["depth"],
                                   n_colors=config["n_colors"], rgb_range=config["rgb_range"],
                                   attention_backend=config["attention_backend"]).eval()
            self.val_upscaler = NetworkUpscaler(self.val_model, config["scale"], config["rgb_range"], self.device,
                                                chop=config["chop"], self_ensemble=config["self_ensemble"],
                                                precision=inference_precision(config["precision"]),
                                                compile=config["compile"],
                                                channels_last=self.memory_format == torch.channels_last)
        self.val_model.load_state_dict(self._eval_weights())
        return {name: evaluate_dataset("csnln", name, config["scale"], data_path=config["data_path"],
                                       upscaler=self.val_upscaler, data_range=config["data_range"],
                                       metric=config["metric"], progress=False)["psnr"]
                for name in filter(None, config["data_test"].split("+"))}

    def _log(self, record):
        with open(self.save_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_log(self):
        """Drop the log.jsonl records past the iteration this run starts from (left by a killed run)."""
        path = self.save_dir / "log.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("iteration", 0) <= self.iteration]
        if len(kept) != len(lines):
            atomic_write(path, lambda f: f.writelines(kept), binary=False)

"""How this training process was started: by `python train.py` (alone or with --gpus), or by
torchrun, whose elastic agent may have restarted it."""
import os
import pathlib


def under_torchrun():
    """True in a process that torchrun's elastic agent started."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def torchrun_restarts():
    """How many times torchrun has restarted this job's processes (0: the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def restarts_share_a_store():
    """True when torchrun may restart the processes (--max-restarts) and hand the new ones the store
    of the old: its agent keeps one store across restarts unless TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)) > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def command(argv):
    """The words that started this process before its options `argv`: ["python", "train.py"], or
    torchrun's command line up to the script, read off its agent (this process's parent, Linux)."""
    if not under_torchrun():
        return ["python", "train.py"]
    try:
        words = pathlib.Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return ["torchrun", "...", "train.py"]
    words = words[1:len(words) - len(argv)]   # without the interpreter and this process's options
    if pathlib.Path(words[0]).name == "torchrun":
        return ["torchrun", *words[1:]]
    return ["python", *words]   # python -m torch.distributed.run ...

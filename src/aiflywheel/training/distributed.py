"""Training on several processes: one leader runs the stage, followers join its fits.

``flywheel train RECIPE --nproc N`` and ``torchrun --nproc_per_node N -m aiflywheel.cli
train RECIPE`` (or ``accelerate launch``, or ``torchrun --nnodes M --rdzv-...`` across
machines) end in the same place: N processes with the usual ``RANK`` / ``WORLD_SIZE`` /
``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` environment, one process group
(gloo on CPU, NCCL on GPUs) and a second gloo group for control messages.

- **Rank 0 leads.** It runs the whole training stage as a single process would: it takes
  the feature lock, works in the ``.partial`` folder, checks data, trains the baseline,
  evaluates, writes artifacts and registers the version. Nothing else touches the store
  or the run folder, so the run lifecycle (``core.runs``) is unchanged.
- **The others follow.** They wait for the leader to broadcast a call (``on_every_rank``
  marks such methods: a fine-tuned model's ``fit``), run the same call on their own copy
  of the object, and go back to waiting until the leader says it is done. Inside the
  call, the HF Trainer wraps the model in DistributedDataParallel (gradients all-reduced
  every step) and shards each batch with a distributed sampler; only rank 0 saves
  checkpoints and logs.
- **One global batch.** Each process takes ``train.batch_size / N`` rows a step, so a
  step means the same number of rows whatever N is, and a checkpoint written with N
  processes resumes with any other N (model, optimizer, scheduler and step counter are
  those of one process; a per-process RNG file that is absent is skipped with a notice;
  stopped mid-epoch, the rest of that epoch is drawn in the new N's order).
- **Ctrl-C** stops every process at the end of the same step (the stop flag is reduced
  over the group each step), rank 0 saves a checkpoint, and the same command resumes.

With ``--nproc`` the command's own process is rank 0 and starts the N-1 followers on
this machine (``launch``). Under ``torchrun`` every process is started by the launcher
and finds its rank in the environment. A run resumed across machines needs the run
folder on a filesystem every node sees (followers read the checkpoint the leader wrote).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiflywheel.errors import FlywheelError, ModelError

# How long a follower may wait for the leader's next call (data check, baseline and
# evaluation run on the leader alone while the followers wait).
CONTROL_TIMEOUT = timedelta(hours=6)
RENDEZVOUS_TIMEOUT = timedelta(minutes=5)  # followers importing torch on a busy machine
LEADER_PID = "FLYWHEEL_TRAIN_LEADER_PID"
FOLLOWER_EXIT_SECONDS = 30.0
_DONE = "done"
_CALL = "call"
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class Group:
    """This process's place in the group and the group used for control messages."""

    rank: int
    world_size: int
    local_rank: int
    control: Any = None

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """``value`` from rank 0, on every rank (a picklable object)."""
        import torch.distributed as dist

        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (a collective: every rank must call it)."""
        import torch
        import torch.distributed as dist

        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())


_current: Group | None = None


def current() -> Group | None:
    """The group this process belongs to, or None when training on one process."""
    return _current


def environment_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) alone."""

    def number(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise ModelError(f"{name} must be an integer, got {value!r}") from None

    return number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0)


def check_nproc(nproc: int | None) -> int | None:
    """``nproc`` if usable here; a ModelError naming the bad value otherwise."""
    if nproc is None:
        return None
    if nproc < 1:
        raise ModelError(f"--nproc must be at least 1, got {nproc}")
    _, world, _ = environment_world()
    if world > 1 and nproc > 1:
        raise ModelError(
            f"--nproc {nproc} given inside a launcher that already started {world} processes "
            "(torchrun / accelerate launch); drop --nproc"
        )
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise ModelError(
            f"--nproc {nproc} is more than the {torch.cuda.device_count()} GPUs here; "
            "use one process per GPU"
        )
    return nproc


def per_process_batch(batch_size: int, world_size: int) -> int:
    """Rows each process takes a step so that the global batch stays ``batch_size``."""
    if batch_size % world_size:
        raise ModelError(
            f"train.batch_size {batch_size} must be divisible by the {world_size} training "
            "processes (each takes an equal share of one global batch)"
        )
    return batch_size // world_size


@contextmanager
def training_group(nproc: int | None, argv: Sequence[str]) -> Iterator[bool]:
    """Join (or, with ``nproc`` > 1, start) the training processes; yields whether this
    process leads. A follower has done its whole part when the block is entered (the
    caller does nothing else); the leader runs the stage inside the block."""
    global _current
    rank, world, local_rank = environment_world()
    followers: list[subprocess.Popen] = []
    saved = {name: os.environ.get(name) for name in ENV_KEYS}
    if world == 1 and (nproc or 1) > 1:
        port = _free_port()
        followers = launch(nproc, argv, port=port)
        rank, world, local_rank = 0, nproc, 0
        os.environ.update(_worker_env(0, nproc, port))
        if "OMP_NUM_THREADS" not in os.environ:  # the followers' share of the cores, too
            import torch

            torch.set_num_threads(_threads(nproc))
    if world == 1:
        yield True
        return
    try:
        group = _init(rank, world, local_rank, launched=bool(followers))
        _current = group
        if not group.leader:
            follow(group)
            yield False
            return
        try:
            yield True
        finally:
            _say_done(group)
    finally:
        _current = None
        _shutdown()
        _reap(followers)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def launch(nproc: int, argv: Sequence[str], *, port: int) -> list[subprocess.Popen]:
    """Start ranks 1..nproc-1 of this command on this machine (this process is rank 0)."""
    command = [sys.executable, "-m", "aiflywheel.cli", *argv]
    processes = []
    for rank in range(1, nproc):
        env = {**os.environ, **_worker_env(rank, nproc, port), LEADER_PID: str(os.getpid())}
        env.setdefault("OMP_NUM_THREADS", str(_threads(nproc)))
        processes.append(subprocess.Popen(command, env=env))
    return processes


def _threads(nproc: int) -> int:
    """Torch threads per process: the machine's cores shared among the processes."""
    return max(1, (os.cpu_count() or 1) // nproc)


def _worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _init(rank: int, world: int, local_rank: int, *, launched: bool) -> Group:
    """Join the process group. A leader that started its followers (``--nproc``) hosts
    the rendezvous and gives up after ``RENDEZVOUS_TIMEOUT``; a follower it started exits
    when the leader is gone. Under torchrun the launcher does both."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    follower_of = os.environ.get(LEADER_PID)
    if follower_of:
        _exit_with_leader(int(follower_of))
    if not dist.is_initialized():
        store = None
        if launched or follower_of:  # both sides of --nproc join through the same store
            try:
                store = dist.TCPStore(
                    os.environ["MASTER_ADDR"],
                    int(os.environ["MASTER_PORT"]),
                    world,
                    is_master=launched,
                    timeout=RENDEZVOUS_TIMEOUT,
                )
            except (RuntimeError, OSError) as exc:
                raise ModelError(
                    f"the {world - 1} training processes started for --nproc {world} did not "
                    f"join within {RENDEZVOUS_TIMEOUT.seconds} s: {_first_line(exc)}"
                ) from None
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            store=store,
            rank=rank,
            world_size=world,
            timeout=CONTROL_TIMEOUT,
        )
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT) if cuda else None
    return Group(rank=rank, world_size=world, local_rank=local_rank, control=control)


def _exit_with_leader(leader: int) -> None:
    """A follower started by ``--nproc``: end this process when its leader is gone (a
    SIGKILL of the leader leaves no one to say it is done)."""
    import threading

    def watch() -> None:
        while True:
            if os.getppid() != leader:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="leader-watch", daemon=True).start()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _reap(followers: list[subprocess.Popen]) -> None:
    """Wait for the followers this process started; stop any that linger."""
    deadline = time.monotonic() + FOLLOWER_EXIT_SECONDS
    for process in followers:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _say_done(group: Group) -> None:
    with contextlib.suppress(Exception):  # a follower already gone: nothing left to tell
        group.broadcast((_DONE,))


def follow(group: Group) -> None:
    """Run the leader's broadcast calls until it says it is done (followers only)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the leader decides when to stop
    try:
        while True:
            try:
                message = group.broadcast(None)
            except RuntimeError as exc:  # the leader is gone (killed, crashed)
                raise ModelError(
                    f"training process {group.rank} of {group.world_size} lost the leader "
                    f"(rank 0): {_first_line(exc)}"
                ) from None
            if message[0] == _DONE:
                return
            _, target, name, args, kwargs = message
            try:
                getattr(target, name)(*args, **kwargs)
            except FlywheelError:
                continue  # the leader met the same error (or the same interruption)
    finally:
        signal.signal(signal.SIGINT, previous)


def on_every_rank(method: Callable) -> Callable:
    """Mark a method every training process must run together (a fit): on the leader of a
    group, the call (object and arguments) is first broadcast to the followers."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        group = current()
        if group is not None and group.leader:
            group.broadcast((_CALL, self, method.__name__, args, kwargs))
        return method(self, *args, **kwargs)

    return call


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any training process (every process must ask, at the
    same point); ``flag`` itself when training on one process."""
    group = current()
    return flag if group is None else group.any(flag)


__all__ = [
    "Group",
    "any_rank",
    "check_nproc",
    "current",
    "environment_world",
    "launch",
    "on_every_rank",
    "per_process_batch",
    "training_group",
]

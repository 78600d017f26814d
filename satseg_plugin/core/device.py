"""Choose the torch device a model runs on.

``auto`` picks CUDA when ``torch.cuda.is_available()``, else the CPU; ``cpu`` and ``cuda`` / ``cuda:N``
force one. Asking for CUDA where there is none is a :class:`DeviceError` that says what to choose instead.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Tuple

from .deps import require
from .errors import DeviceError
from .progress import Feedback

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICE_CHOICES", "resolve_device", "describe_device", "shrink_batch_after_oom"]

#: The values offered in the Processing DEVICE parameter (any ``cuda:N`` is accepted too).
DEVICE_CHOICES: Tuple[str, ...] = ("auto", "cpu", "cuda")

_SPEC = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


def resolve_device(spec: str = "auto") -> "torch.device":
    """Turn a device spec into a ``torch.device``.

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (case-insensitive).

    Returns:
        The device to use.

    Raises:
        DeviceError: if the spec is malformed or names a CUDA device that does not exist.
    """
    torch = require("torch")
    text = (spec or "auto").strip().lower()
    match = _SPEC.match(text)
    if not match:
        raise DeviceError(f"Unknown device '{spec}'. Use one of: auto, cpu, cuda, cuda:N (N = GPU index).")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"Device '{spec}' was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Choose 'auto' or 'cpu'."
        )
    index = int(match.group(2) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"Device '{spec}' does not exist: this machine has {count} CUDA GPU(s), "
                          f"numbered 0..{count - 1}.")
    return torch.device(f"cuda:{index}")


def describe_device(device: "torch.device") -> str:
    """A one-line description for the log, e.g. ``cuda:0 (NVIDIA H100, 79.1 GiB)`` or ``cpu (2 threads)``."""
    torch = require("torch")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"


def shrink_batch_after_oom(batch_size: int, feedback: Feedback, unit: str, advice: str, minimum: int = 1) -> int:
    """After a CUDA out-of-memory error: free cached memory and return half the batch size.

    Call it after leaving the ``except`` block of the error: the traceback holds the failed batch's tensors,
    and their memory is only free once it is gone. :class:`.fit.OomBackoff` does the retrying.

    Args:
        batch_size: the batch size that ran out of memory.
        feedback: where the retry is announced.
        unit: what a batch holds, for the messages (``"tile"``, ``"crop"``).
        advice: what the user can change when even the smallest batch does not fit.
        minimum: the smallest usable batch (2 for networks whose batch norm trains on batch statistics).

    Raises:
        DeviceError: when the batch size already was ``minimum`` (or less).
    """
    torch = require("torch")
    torch.cuda.empty_cache()
    units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")  # crops, patches
    if batch_size <= minimum:
        count = f"one {unit}" if minimum <= 1 else f"{minimum} {units}"
        raise DeviceError(f"CUDA ran out of memory with {count} per batch. {advice}")
    smaller = max(minimum, batch_size // 2)
    feedback.warning(f"CUDA out of memory: retrying with batches of {smaller} {units}.")
    return smaller

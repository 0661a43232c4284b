"""``DeviceLoader``: batches on the GPU before the model asks for them.

On CUDA, batch ``k + 1`` is copied host-to-device on a side stream while the
model works on batch ``k`` on the current stream:

1. the copy (and the optional on-device ``transform``) of batch ``k + 1`` is
   issued on the side stream, from pinned memory, with ``non_blocking=True``;
2. before batch ``k + 1`` is handed out, the current stream waits for the side
   stream (``wait_stream``) so the model never reads a half-copied batch, and
   each of its tensors is marked as used on the current stream
   (``record_stream``) so the caching allocator does not reuse its memory early;
3. the host tensors stay referenced until an event recorded after their copy has
   completed, so pinned buffers (``ChunkedLoader``'s RAM chunks) are never
   refilled under an in-flight copy.

A ``transform`` such as uint8 -> float and normalise runs on the device after
the copy, so four times fewer bytes cross PCIe. Elsewhere (CPU, or a device
without streams) it is a pass-through that moves batches and applies ``transform``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["DeviceLoader", "check_device", "check_pin_memory", "move_to"]


def check_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, refused now if this machine cannot use it (not at the first batch).

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(
                f"device={str(device)!r} needs a CUDA GPU, but torch.cuda.is_available() is False "
                f"here (torch {torch.__version__}, {built}); use device='cpu' (or None) on this "
                f"machine, or install a CUDA build of torch where a GPU is present"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device={str(device)!r} does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}"
            )
    return device


def check_pin_memory(pin_memory: bool | None) -> bool:
    """Whether to pin host buffers: ``None`` pins where CUDA is present; ``True`` needs it."""
    pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
    if pin and not torch.cuda.is_available():
        raise ValueError(
            "pin_memory=True needs CUDA, and torch.cuda.is_available() is False here; "
            "leave pin_memory=None to pin only where CUDA is present"
        )
    return pin


def move_to(batch: Any, device: torch.device, *, non_blocking: bool = True) -> Any:
    """``batch`` with every tensor in it (tuples, lists, dicts, nested) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to(v, device, non_blocking=non_blocking) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to(v, device, non_blocking=non_blocking) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to(v, device, non_blocking=non_blocking) for v in batch)
    return batch


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, Mapping):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (tuple, list)):
        for value in batch:
            yield from _tensors(value)


class DeviceLoader:
    """Wrap any iterable of batches so they arrive on ``device``, copied ahead of use.

    Args:
        loader: any iterable of batches (tensors, tuples, dicts, nested), e.g. a
            ``DataLoader(..., pin_memory=True)`` or a ``ChunkedLoader``.
        device: where batches go, e.g. ``"cuda"``.
        transform: applied to each batch on the device, after the copy.
        non_blocking: asynchronous copies (effective from pinned memory).

    Example:
        >>> batches = [torch.full((2, 3), i, dtype=torch.uint8) for i in range(3)]
        >>> loader = DeviceLoader(batches, "cpu", transform=lambda b: b.float() / 255)
        >>> [round(b[0, 0].item(), 4) for b in loader]
        [0.0, 0.0039, 0.0078]
    """

    def __init__(
        self,
        loader: Iterable[Any],
        device: str | torch.device,
        *,
        transform: Callable[[Any], Any] | None = None,
        non_blocking: bool = True,
    ) -> None:
        self.loader = loader
        self.device = check_device(device)
        self.transform = transform
        self.non_blocking = non_blocking

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped loader."""
        self.loader.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        if self.device.type == "cuda":
            return self._cuda_batches()
        return self._plain_batches()

    def _plain_batches(self) -> Iterator[Any]:
        for batch in self.loader:
            batch = move_to(batch, self.device, non_blocking=self.non_blocking)
            yield batch if self.transform is None else self.transform(batch)

    def _cuda_batches(self) -> Iterator[Any]:
        side = torch.cuda.Stream(self.device)
        in_flight: deque[tuple[torch.cuda.Event, Any]] = deque()
        host_batches = iter(self.loader)

        def start_copy() -> Any:
            host = next(host_batches, _END)
            if host is _END:
                return _END
            with torch.cuda.stream(side):
                batch = move_to(host, self.device, non_blocking=self.non_blocking)
                if self.transform is not None:
                    batch = self.transform(batch)
                copied = torch.cuda.Event()
                copied.record(side)
            in_flight.append((copied, host))  # keep host memory until the copy is done
            return batch

        upcoming = start_copy()
        while upcoming is not _END:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(side)
            for tensor in _tensors(upcoming):
                if tensor.is_cuda:
                    tensor.record_stream(current)
            batch, upcoming = upcoming, start_copy()
            while in_flight and in_flight[0][0].query():
                in_flight.popleft()
            yield batch
        for event, _ in in_flight:
            event.synchronize()

    def __repr__(self) -> str:
        return f"DeviceLoader({self.loader!r}, device={str(self.device)!r})"


_END = object()

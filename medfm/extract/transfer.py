"""Device-to-host copies of a batch's outputs that do not stall the GPU.

Reading a CUDA tensor with ``.cpu()`` right after the forward pass waits for that pass to finish,
so the GPU idles while the host converts, checks and queues the rows, then waits again for the
next batch to be loaded. ``LaggedCopies`` instead starts each batch's copy with
``non_blocking=True`` (into pinned host memory), records a CUDA event, and hands the batch back
only after the *next* batch's forward pass has been queued. The host then waits on an event that
has usually already fired. On CPU the same order is kept (one batch of lag, no events), so the
CPU tests run exactly the code path the GPU runs.
"""

from __future__ import annotations

from collections import deque

import torch


class LaggedCopies:
    def __init__(self, device: torch.device, lag: int = 1):
        self.cuda = device.type == "cuda"
        self.lag = lag
        self._queue: deque = deque()

    def push(self, tensors: tuple[torch.Tensor | None, ...], tag) -> list[tuple[tuple, object]]:
        """Start copying ``tensors`` (None entries pass through); return the batches now on the host."""
        host = tuple(None if t is None else t.float().to("cpu", non_blocking=self.cuda) for t in tensors)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self._queue.append((host, tag, event))
        ready = []
        while len(self._queue) > self.lag:
            ready.append(self._pop())
        return ready

    def drain(self) -> list[tuple[tuple, object]]:
        """Every batch still in flight, in order."""
        return [self._pop() for _ in range(len(self._queue))]

    def _pop(self) -> tuple[tuple, object]:
        host, tag, event = self._queue.popleft()
        if event is not None:
            event.synchronize()
        return tuple(None if t is None else t.numpy() for t in host), tag

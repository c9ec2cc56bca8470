"""Peak memory of a training run (reported in summary.json and by ``excite compare``)."""

from __future__ import annotations

import resource
import sys

import torch


class PeakMemory:
    """Peak memory of the run: CUDA ``max_memory_allocated`` or the process's peak RSS.

    Creating it starts the measurement. On Linux the RSS high-water mark is reset
    (``/proc/self/clear_refs``), so runs in one process (``excite compare``) are measured
    separately; elsewhere the process's lifetime ``ru_maxrss`` is reported.

    Args:
        device: the device the run trains on.

    Attributes:
        kind: what :meth:`peak_mb` measures: ``"cuda_max_allocated"``, ``"peak_rss"`` or
            ``"lifetime_max_rss"``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "peak_rss"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                self.kind = "lifetime_max_rss"

    def peak_mb(self) -> float:
        """The peak so far, in MiB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (2**20 if sys.platform == "darwin" else 1024)

"""Classification metrics accumulated over batches (and reducible across processes).

Accuracy = correct / N; top-k counts a sample correct when its label is among the k
highest logits; per-class accuracy of class c = C[c, c] / sum_j C[c, j] for the
confusion matrix C (rows = true class, columns = predicted class).
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class ClassificationMeter:
    """Running sums for loss, accuracy, top-5 and the confusion matrix.

    Args:
        num_classes: K; logits must have shape (N, K) and targets (N,) with values in [0, K).
    """

    num_classes: int
    loss_sum: float = 0.0
    count: int = 0
    correct: int = 0
    correct_top5: int = 0
    confusion: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.confusion is None:
            self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    @property
    def has_top5(self) -> bool:
        return self.num_classes >= 5

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        """Add a batch: ``loss`` is the batch-mean loss (weighted by the batch size)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits must have shape (N, {self.num_classes}), got {tuple(logits.shape)}"
            )
        if target.shape != logits.shape[:1]:
            raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
        logits = logits.detach().float().cpu()
        target = target.detach().long().cpu()
        n = int(target.numel())
        pred = logits.argmax(dim=1)
        self.correct += int((pred == target).sum())
        if self.has_top5:
            top = logits.topk(5, dim=1).indices
            self.correct_top5 += int((top == target[:, None]).any(dim=1).sum())
        idx = target * self.num_classes + pred
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )
        if loss is not None:
            self.loss_sum += float(loss) * n
        self.count += n

    def all_reduce(self) -> None:
        """Sum the counters over all processes of the default process group."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        backend = dist.get_backend()
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        scalars = torch.tensor(
            [self.loss_sum, float(self.count), float(self.correct), float(self.correct_top5)],
            dtype=torch.float64,
            device=device,
        )
        confusion = self.confusion.to(device)
        dist.all_reduce(scalars)
        dist.all_reduce(confusion)
        self.loss_sum = float(scalars[0])
        self.count, self.correct, self.correct_top5 = (int(round(float(v))) for v in scalars[1:])
        self.confusion = confusion.cpu()

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def top5(self) -> float | None:
        if not self.has_top5:
            return None
        return self.correct_top5 / self.count if self.count else float("nan")

    def per_class_accuracy(self) -> list[float]:
        """Recall of each class (NaN for a class with no samples)."""
        totals = self.confusion.sum(dim=1)
        return [
            float(self.confusion[c, c]) / float(totals[c]) if totals[c] else float("nan")
            for c in range(self.num_classes)
        ]

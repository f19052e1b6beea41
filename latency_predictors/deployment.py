"""The deployment shape: what a latency number is measured at besides the device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Deployment:
    """The shape a model is deployed at: batch size, input channels and classes. The input
    side is each candidate's own resolution."""

    batch_size: int = 1
    channels: int = 3
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.channels < 1 or self.num_classes < 1:
            raise ValueError(
                "batch_size, channels and num_classes must be >= 1; got "
                f"{self.batch_size}, {self.channels}, {self.num_classes}"
            )

    def shape(self, side: int) -> tuple[int, int, int, int]:
        """The NCHW input shape at a square input of `side` pixels."""
        return self.batch_size, self.channels, side, side

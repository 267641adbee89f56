"""The input channels each dataset offers and the ones a run reads by default: the one table the readers,
the configuration checks and the measurements share."""

from __future__ import annotations

#: dataset → every channel it offers, in the order of the reader's input axis
CHANNELS: dict[str, tuple[str, ...]] = {
    "isles22": ("dwi", "adc", "flair"),
    "atlas2": ("t1w",),
    "prostatex": ("t2",),
    "lgg": ("pre_contrast", "flair", "post_contrast"),
}

#: dataset → the channels read when ``data.channels`` is null (ISLES'22: DWI and ADC, as the seed)
DEFAULT_CHANNELS: dict[str, tuple[str, ...]] = {
    "isles22": ("dwi", "adc"),
    "atlas2": ("t1w",),
    "prostatex": ("t2",),
    "lgg": ("pre_contrast", "flair", "post_contrast"),
}


def channels_of(dataset: str, channels=None) -> tuple[str, ...]:
    """The channels a run reads: ``channels`` when given, else the dataset's default."""
    return tuple(channels) if channels else DEFAULT_CHANNELS[dataset]

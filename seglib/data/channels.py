"""The input channels each dataset offers and the ones a run reads by default: the one table the readers,
the configuration checks and the measurements share."""

from __future__ import annotations

#: dataset → every channel it offers, in the order of the reader's input axis
CHANNELS: dict[str, tuple[str, ...]] = {
    "isles22": ("dwi", "adc", "flair"),
    "atlas2": ("t1w",),
    "prostatex": ("t2",),
    "lgg": ("pre_contrast", "flair", "post_contrast"),
    # nnunet: a real dataset's channels come from its dataset.json (channels_offered); these are the phantom's
    "nnunet": ("dwi", "adc"),
}

#: the labels of the nnU-Net-layout phantom (seglib.data.phantoms): name → value
NNUNET_PHANTOM_LABELS = {"background": 0, "lesion": 1, "rim": 2}

#: dataset → the channels read when ``data.channels`` is null (ISLES'22: DWI and ADC, as the seed)
DEFAULT_CHANNELS: dict[str, tuple[str, ...]] = {
    "isles22": ("dwi", "adc"),
    "atlas2": ("t1w",),
    "prostatex": ("t2",),
    "lgg": ("pre_contrast", "flair", "post_contrast"),
    "nnunet": ("dwi", "adc"),
}


def channels_offered(dataset: str, data_dir=None) -> tuple[str, ...]:
    """Every channel ``dataset`` offers; for ``nnunet`` with a ``data_dir``, the ``channel_names`` of its
    ``dataset.json`` (lower-case), without one the phantom's."""
    if dataset == "nnunet" and data_dir:
        from seglib.data.readers.nnunet import dataset_channels

        return dataset_channels(data_dir)
    return CHANNELS[dataset]


def channels_of(dataset: str, channels=None, data_dir=None) -> tuple[str, ...]:
    """The channels a run reads: ``channels`` when given, else the dataset's default (``nnunet``: every channel
    of its ``dataset.json`` when ``data_dir`` is given)."""
    if channels:
        return tuple(channels)
    return channels_offered(dataset, data_dir) if dataset == "nnunet" else DEFAULT_CHANNELS[dataset]

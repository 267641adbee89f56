"""The parameters: frozen dataclasses, one per concern (data, model, loss, optim, train, each study's
settings), with their ranges and the download help of each dataset."""


from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from seglib.config.validate import (  # noqa: F401 - re-exported: the config's public API
    ConfigError,
    _check_range,
    _coerce,
    as_dict,
    build_section,
    deep_merge,
    load_yaml,
    parse_assignment,
)
from seglib.hashing import stable_hash

STUDIES = ("stroke", "prostate", "brain")
PROFILES = ("smoke", "quick", "full")
#: the names of seglib.nn.losses.LOSSES a config may choose (loss.name)
LOSS_CHOICES = (
    "bce", "dice", "dice_bce", "tversky", "gdl_ce", "gdl_ce_as_published", "log_cosh_dice", "shape_aware",
)


#: how the report names each loss (a study's report may name its own published ones otherwise)
LOSS_LABELS = {"bce": "BCE", "dice": "Dice", "dice_bce": "Dice + BCE", "tversky": "Tversky", "gdl_ce": "GDL + CE",
               "gdl_ce_as_published": "GDL + CE as published", "log_cosh_dice": "log-cosh Dice",
               "shape_aware": "shape-aware"}
assert set(LOSS_LABELS) == set(LOSS_CHOICES)


def _rng(lo=None, hi=None, lo_open=False, hi_open=False):
    return {"range": (lo, hi, lo_open, hi_open)}


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["isles22", "atlas2", "prostatex", "lgg", "nnunet"] = "isles22"
    data_dir: Optional[str] = None  # None: synthetic phantoms written under build/phantoms
    channels: Optional[tuple[str, ...]] = None  # None: the dataset's default channels
    n_cases: int = field(default=20, metadata=_rng(2))  # phantoms only
    phantom_shape: Optional[tuple[int, ...]] = None  # phantoms only; None: the generator's default
    phantom_seed: int = field(default=0, metadata=_rng(0))
    max_cases: Optional[int] = field(default=None, metadata=_rng(2))  # use only the first N cases of real data
    size: int = field(default=64, metadata=_rng(4, 1024))  # resize target: N^3 (3D) or N x N (2D)
    normalize: Literal["none", "zscore", "zscore_nonzero", "minmax", "buda"] = "none"
    mask_interp: Literal["nearest", "linear_as_published"] = "nearest"
    split: Literal["patient", "slice"] = "patient"
    val_fraction: float = field(default=0.2, metadata=_rng(0, 1, True, True))
    n_val: Optional[int] = field(default=None, metadata=_rng(1))
    sampler: Literal["none", "rejection", "lesion_aware"] = "none"
    patch_size: Optional[int] = field(default=None, metadata=_rng(4, 1024))
    sampler_threshold: float = field(default=0.4, metadata=_rng(0, 1))  # lesion fraction a patch must hold
    samples_per_epoch: Optional[int] = field(default=None, metadata=_rng(1))
    slice_sampling: Literal["uniform", "lesion_weighted"] = "uniform"
    augment: bool = False
    # 2D studies, with `augment`: nnU-Net's intensity augmentation of the image channels too (brightness,
    # contrast, gamma, noise) after the study's spatial augmentation
    augment_intensity: bool = False
    # nnunet only: the foreground of the binary task, a label of dataset.json by name or value (None: every
    # non-zero label)
    foreground: Union[int, str, None] = None
    # 2D studies: the voxel axis the volumes are cut along into slices (2: the last, as PROSTATEx and LGG are
    # stored; nnU-Net datasets may need another)
    slice_axis: Literal[0, 1, 2] = 2
    # patient-level k-fold cross-validation: validate on fold `fold` of `folds` (None: `n_val` / `val_fraction`)
    folds: Optional[int] = field(default=None, metadata=_rng(2))
    fold: int = field(default=0, metadata=_rng(0))
    # train on every labelled patient, the validation patients too: the model for `seglib predict` made from all
    # the data. Its validation numbers are on patients it trained on, so tables and figures leave such runs out
    # (a grid sweeps data.refit: [false, true]: the first validates, the second is the one to apply)
    refit: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["unet", "unetpp"] = "unet"
    spatial_dims: Literal[2, 3] = 2
    features: tuple[int, ...] = field(default=(32, 64, 128, 256, 512), metadata=_rng(1))  # widths per level
    conv: Literal["3d", "2+1d"] = "3d"
    # (2+1)D only: recompute each pair's inner maps in the backward pass (less memory, more time);
    # "auto": on CUDA only. Part of the run's key: in fp32 the weight gradients differ in the last bit
    recompute: Literal["auto", "on", "off"] = "auto"
    upsample: Literal["transpose", "linear"] = "transpose"


@dataclass(frozen=True)
class LossConfig:
    name: Literal[LOSS_CHOICES] = "dice"  # type: ignore[valid-type]
    alpha: Optional[float] = field(default=None, metadata=_rng(0, 1))  # Tversky: weight of false positives
    beta: Optional[float] = field(default=None, metadata=_rng(0, 1))  # Tversky: weight of false negatives (1 - alpha)
    batch: bool = True  # soft Dice pooled over the batch, as the seeds' code did
    smooth: float = field(default=1.0, metadata=_rng(0))


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "sgd"] = "adam"
    lr: float = field(default=1e-4, metadata=_rng(0, 10, True))
    momentum: float = field(default=0.9, metadata=_rng(0, 1))
    weight_decay: float = field(default=0.0, metadata=_rng(0))
    grad_clip: Optional[float] = field(default=None, metadata=_rng(0, None, True))
    # the learning rate over the epochs: constant, cosine or poly decay to 0 after a linear warm-up
    schedule: Literal["constant", "cosine", "poly"] = "constant"
    warmup_epochs: int = field(default=0, metadata=_rng(0))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=20, metadata=_rng(1, 10000))
    batch_size: int = field(default=16, metadata=_rng(1, 4096))
    patience: Optional[int] = field(default=None, metadata=_rng(1))
    min_delta: float = field(default=0.0, metadata=_rng(0))
    monitor: str = "val_dice"
    mode: Literal["min", "max"] = "max"
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    threshold: float = field(default=0.5, metadata=_rng(0, 1, True, True))  # on the sigmoid output
    # 2D studies' evaluation and `seglib predict`: test-time flips average the probabilities of the slice and
    # its mirror images, "lr" left-right (the flip of study C's augmentation), "lr_ud" also up-down and both
    # (study B's); "largest" keeps the largest 3D connected component of each patient's predicted volume
    # (26-connected, across slices)
    tta: Literal["none", "lr", "lr_ud"] = "none"
    postprocess: Literal["none", "largest"] = "none"
    # CPU threads a run trains and evaluates with: part of the run's key, since a CPU's floating-point
    # sums (and so the trained bits) depend on how the work is split between threads
    cpu_threads: int = field(default=1, metadata=_rng(1, 1024))


@dataclass(frozen=True)
class StrokeSettings:
    memory_sizes: tuple[int, ...] = field(default=(32, 64, 128), metadata=_rng(4, 1024))  # A2: input sizes
    memory_batch: int = field(default=2, metadata=_rng(1))
    memory_features: tuple[int, ...] = field(default=(16, 32, 64, 128), metadata=_rng(1))
    memory_steps: int = field(default=2, metadata=_rng(1))
    sampler_thresholds: tuple[float, ...] = field(default=(0.2, 0.4, 0.6), metadata=_rng(0, 1))
    sampler_patches: int = field(default=20, metadata=_rng(1))
    sampler_max_draws: int = field(default=2000, metadata=_rng(1))


@dataclass(frozen=True)
class ProstateSettings:
    """Study B has no settings of its own (B5's slice is the held-out slice with the largest gland)."""


@dataclass(frozen=True)
class BrainSettings:
    n_examples: int = field(default=4, metadata=_rng(1, 4))  # C5: example slices shown (of the 4 each run stores)


#: keys that were validated and then ignored, removed: where.key → why (an error names it if a file still has it)
REMOVED_KEYS = {
    "settings.largest_component": "no evaluation applied it; the per-volume DSC is that of the raw prediction",
    "settings.example_case": "B5 shows the held-out slice with the largest gland, chosen when the run is evaluated",
    "settings.example_slice": "B5 shows the held-out slice with the largest gland, chosen when the run is evaluated",
}

#: the data options each study uses: study → key → (the values it offers, why others are refused)
STUDY_DATA_OPTIONS = {
    "stroke": {"augment": ((False,), "trains without augmentation (as published)"),
               "augment_intensity": ((False,), "trains without augmentation (as published)"),
               "split": (("patient",), "splits by patient (3D volumes have no slice split)"),
               "slice_axis": ((2,), "is 3D: it cuts no slices"),
               "normalize": (("none", "zscore", "zscore_nonzero"), "offers no normalisation (as published), a "
                                                                   "per-channel z-score over the volume or over its "
                                                                   "non-zero (brain) voxels")},
    "prostate": {"normalize": (("none", "minmax"), "offers min-max per slice (as published) or none")},
    "brain": {"normalize": (("none", "buda"), "offers Buda's per-volume preprocessing or none"),
              "split": (("patient",), "splits by patient (Buda et al.)")},
}


EXECUTORS = ("local", "dask", "slurm")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the grid's runs train; not part of any run's key (where a run trained does not change what it is)."""

    name: Literal["local", "dask", "slurm"] = "local"  # local: in this process, one run after the other
    scheduler: Optional[str] = None  # dask: tcp://host:port of an existing cluster (None: a LocalCluster)
    workers: Optional[int] = field(default=None, metadata=_rng(1, 4096))  # LocalCluster: worker processes
    gpus: Optional[tuple[str, ...]] = None  # LocalCluster: GPU ids, one worker each (None: the visible ones)
    retries: int = field(default=2, metadata=_rng(0, 100))  # per run, for a lost worker, preemption or OOM
    partition: Optional[str] = None  # slurm
    time_min: int = field(default=60, metadata=_rng(1, 100000))  # slurm: time limit per job
    gpus_per_job: int = field(default=1, metadata=_rng(0, 64))
    cpus_per_job: int = field(default=4, metadata=_rng(1, 1024))
    mem_gb: int = field(default=16, metadata=_rng(1, 100000))
    parallelism: int = field(default=16, metadata=_rng(1, 100000))  # slurm: array jobs running at once
    setup: tuple[str, ...] = ()  # slurm: shell lines run before each job (module load, source .venv/...)
    cluster: Literal["slurm", "local", "debug"] = "slurm"  # submitit's: local runs the jobs as local processes


STUDY_SETTINGS = {"stroke": StrokeSettings, "prostate": ProstateSettings, "brain": BrainSettings}


@dataclass(frozen=True)
class StudyConfig:
    study: str
    profile: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    train: TrainConfig
    settings: Any  # StrokeSettings | ProstateSettings | BrainSettings
    grid: tuple[dict, ...] = ()
    seeds: tuple[int, ...] = (0,)
    executor: ExecutorConfig = ExecutorConfig()

    @property
    def hash(self) -> str:
        return config_hash(self)

    def to_dict(self) -> dict:
        return as_dict(self)

    def run_base(self) -> dict:
        """The nested dict a grid expands: the sections that define one training run (each run's cell stays
        this plain dict, its key; the code that trains it reads it as a :class:`~seglib.config.RunConfig`)."""
        d = as_dict(self)
        return {k: d[k] for k in ("data", "model", "loss", "optim", "train")}


SECTIONS = {
    "data": DataConfig, "model": ModelConfig, "loss": LossConfig, "optim": OptimConfig, "train": TrainConfig,
}
TOP_KEYS = ("profile", "data", "model", "loss", "optim", "train", "settings", "grid", "seeds", "executor")

DOWNLOAD_HELP = {
    "isles22": (
        "ISLES'22: download the public training set (250 cases, CC BY-SA 4.0) from "
        "https://isles22.grand-challenge.org/ (the challenge page links the zenodo archive) and unpack it; data_dir is the "
        "folder holding sub-strokecaseNNNN/ses-0001/{dwi,anat}/ and derivatives/sub-strokecaseNNNN/ses-0001/*_msk.nii.gz"
    ),
    "atlas2": (
        "ATLAS R2.0: request it at https://fcon_1000.projects.nitrc.org/indi/retro/atlas.html (decrypt the "
        "archive with the key you are sent); data_dir is ATLAS_2/Training holding RNNN/sub-rNNNsMMM/ses-1/anat/ "
        "with *_T1w.nii.gz and *_label-L_desc-T1lesion_mask.nii.gz"
    ),
    "prostatex": (
        "PROSTATEx: T2 axial series from TCIA (https://www.cancerimagingarchive.net/collection/prostatex/) with "
        "the Cuocolo et al. gland masks (https://github.com/rcuocolo/PROSTATEx_masks); data_dir is "
        "Files/prostate holding Images/ProstateX-NNNN_t2_tse_tra_K.nii.gz and mask_prostate/ProstateX-NNNN.nii.gz"
    ),
    "lgg": (
        "Kaggle LGG: download https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation "
        "(kaggle datasets download -d mateuszbuda/lgg-mri-segmentation) and unzip; data_dir is the kaggle_3m "
        "folder holding TCGA_<inst>_<id>_<date>/TCGA_..._<n>.tif and ..._<n>_mask.tif"
    ),
    "nnunet": (
        "nnU-Net / Medical Segmentation Decathlon raw layout: data_dir is a DatasetNNN_Name folder (or the "
        "nnUNet_raw folder holding one) with dataset.json, imagesTr/<case>_0000.nii.gz ... and labelsTr/<case>.nii.gz"
    ),
}

def config_hash(cfg) -> str:
    """Stable content hash of a resolved configuration (or of any nested dict). A study's ``executor``
    section is left out: where the runs train changes neither them nor the notebook's results."""
    d = as_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    if isinstance(d, dict) and "study" in d and "executor" in d:  # a study's config (or its as_dict)
        d = {k: v for k, v in d.items() if k != "executor"}
    return stable_hash(d)

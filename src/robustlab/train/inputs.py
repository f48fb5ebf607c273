"""The data a trial trains and evaluates on, with the configured fallback datasets."""

from __future__ import annotations

from dataclasses import dataclass

from robustlab.config import DataConfig
from robustlab.data import DatasetInfo, Split, dataset_info, dataset_status, load_split
from robustlab.errors import DatasetError


@dataclass(frozen=True)
class TrialData:
    info: DatasetInfo
    train: Split
    test: Split


def choose_dataset(config: DataConfig) -> str:
    """The first of ``dataset`` and its fallbacks whose files are all present.

    When none is present the primary dataset is returned, so that loading it raises the error
    that names its missing files and the fix.
    """
    candidates = [config.dataset, *config.fallback]
    if len(candidates) == 1:
        return config.dataset
    present = {status.name: status.present for status in dataset_status(config.root)}
    for name in candidates:
        dataset_info(name)  # unknown names fail here, naming the valid ones
        if present.get(name, False):
            return name
    return config.dataset


def load_trial_data(config: DataConfig) -> TrialData:
    name = choose_dataset(config)
    try:
        train = load_split(name, "train", config.root)
        test = load_split(name, "test", config.root)
    except DatasetError as error:
        if config.fallback:
            raise DatasetError(
                f"{error}\n(no fallback dataset was present either: {', '.join(config.fallback)})"
            ) from None
        raise
    return TrialData(info=dataset_info(name), train=_first(train, config, name), test=test)


def _first(train: Split, config: DataConfig, name: str) -> Split:
    """The first ``data.train_images`` training images, refused if there are not that many."""
    count = config.train_images
    if count is None:
        return train
    if count > len(train):
        raise DatasetError(
            f"data.train_images: {count} asked for, but {name} has {len(train)} training images"
        )
    return Split(images=train.images[:count], labels=train.labels[:count])

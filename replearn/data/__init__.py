"""Datasets: the ``Dataset`` replearn trains and analyses on, and the sources that load one by name.

``dataset`` holds the splits and their normalisation; ``readers``, ``cifar_format``, ``streaming`` and
``imagedecode`` read file formats; ``sources`` holds one module per built-in dataset (digits, IDX, npz,
CIFAR, folder, STL-10), each a ``DatasetSource`` registered in ``DATASETS``. A user's own source is a
``DatasetSource`` subclass named by import path in ``data.name``.
"""
from __future__ import annotations

from replearn.data.dataset import (STREAMED_ANALYSIS_IMAGES, Dataset, LabelledArrays, StoredSplits, analysis_view,
                      channel_moments, channel_stats, check_label_array, pixel_range, split_rows,
                      stratified_split, stratified_subset)
from replearn.data.readers import (DEBIAN_DATASET_DIR, IDX_FILES, available_memory, find_idx, idx_search_dirs, read_idx,
                      read_npz_checked)
from replearn.data.sources import (DATASETS, DatasetSource, NoOptions, data_keys, dataset_class, dataset_status,
                      load_dataset, make_dataset_source, register_dataset)
from replearn.data.streaming import FileLayout, ImageStore

__all__ = ["DATASETS", "DEBIAN_DATASET_DIR", "Dataset", "DatasetSource", "FileLayout", "IDX_FILES", "ImageStore",
           "LabelledArrays", "NoOptions", "STREAMED_ANALYSIS_IMAGES", "StoredSplits", "analysis_view",
           "available_memory", "channel_moments", "channel_stats", "check_label_array", "data_keys",
           "dataset_class", "dataset_status", "find_idx", "idx_search_dirs", "load_dataset",
           "make_dataset_source", "pixel_range", "read_idx", "read_npz_checked", "register_dataset", "split_rows",
           "stratified_split", "stratified_subset"]

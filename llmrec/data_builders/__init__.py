"""Stage 1: raw datasets -> one normalized folder; splits; (later) instruction data.

Python API::

    from llmrec.data_builders import build_dataset, split_dataset, load_dataset, load_split
    build_dataset("csv", "beauty_interactions.csv", "data/beauty", items="beauty_items.csv")
    split_dataset("data/beauty", "loo")
    split = load_split("data/beauty", "loo")   # .train, .valid, .test
"""

from llmrec.data_builders.build import FORMATS, build_dataset, read_source, write_raw_dataset
from llmrec.data_builders.dataset import Dataset, load_dataset
from llmrec.data_builders.preprocess import PreprocessConfig
from llmrec.data_builders.splits import PROTOCOLS, Split, load_split, split_dataset
from llmrec.data_builders.synthetic import SyntheticConfig, build_synthetic

__all__ = ["FORMATS", "PROTOCOLS", "Dataset", "PreprocessConfig", "Split", "SyntheticConfig", "build_dataset",
           "build_synthetic", "load_dataset", "load_split", "read_source", "split_dataset", "write_raw_dataset"]

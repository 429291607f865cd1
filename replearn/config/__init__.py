"""Configuration: the config sections (dataclasses loaded from YAML and key=value), typed options, and the plug-in registries. The sections' names are re-exported here."""
from replearn.config.sections import (  # noqa: F401
    AnalysisConfig, Config, DataConfig, ModelConfig, TrainConfig, apply_overrides, bundled_experiments, config_from_dict,
    data_config, dump_yaml, load_config, load_yaml, model_config, parse_override, resolve_config_path)

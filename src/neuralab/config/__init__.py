"""The typed run configuration: recipe files + flags + `--set key=value` overrides, with unknown
keys and wrong types rejected by field path (and the nearest valid key suggested).

sections.py holds the schema (one pydantic model per section; learning.py the train sections
for adversarial training, distillation and self-training); files.py reads recipes and
overrides into it.
"""

from neuralab.config.files import (
    SHORTCUTS,
    apply_override,
    build_config,
    check_path,
    config_from,
    dump_config,
    iter_paths,
    parse_override,
    read_recipe,
    recipe_names,
    resolve_config,
    unknown_key_message,
)
from neuralab.config.sections import (
    FREE_FORM,
    AugmentConfig,
    DataConfig,
    ModelConfig,
    MonitorConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    Section,
    TaskConfig,
    TokenizerConfig,
    TrainConfig,
    explicit_fields,
)
from neuralab.errors import ConfigError  # importable from here, as before

__all__ = [
    "FREE_FORM",
    "SHORTCUTS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "Section",
    "TaskConfig",
    "TokenizerConfig",
    "TrainConfig",
    "apply_override",
    "build_config",
    "check_path",
    "config_from",
    "dump_config",
    "explicit_fields",
    "iter_paths",
    "parse_override",
    "read_recipe",
    "recipe_names",
    "resolve_config",
    "unknown_key_message",
]

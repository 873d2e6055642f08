"""Configuration: the schema (`schema`), reading goniec.toml (`load`), writing it back (`dump`).

Use `load_config(find_config_file(path_or_none))`; it returns an immutable
`Config` or raises `goniec.errors.ConfigError` with one message.
"""

from goniec.config.dump import dump_config
from goniec.config.load import find_config_file, load_config
from goniec.config.schema import Config, Listener

__all__ = ["Config", "Listener", "dump_config", "find_config_file", "load_config"]

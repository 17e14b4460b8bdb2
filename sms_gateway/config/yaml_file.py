"""Our native YAML file (`--config FILE`) -> the native config dict."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

Problem = tuple[str, str]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings and rejects duplicate keys (a silent-override trap)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(path: str) -> tuple[dict[str, Any], list[Problem]]:
    """Parse the file; problems are reported against the file name."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)
    except OSError as e:
        return {}, [(path, f"cannot read the file: {e.strerror or e}")]
    except yaml.YAMLError as e:
        return {}, [(path, f"not valid YAML: {_describe(e)}")]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, [(path, "must be a YAML mapping of settings at the top level")]
    return data, []


def _describe(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(e)

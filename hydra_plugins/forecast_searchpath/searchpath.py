"""Put forecast's configs on every Hydra app's search path, one level down, under `forecast/`.

A plain `pkg://forecast.conf` entry would merge our groups into the app's own (`model/`, `data/`,
...), where they would collide with the user's. The `forecast://` config source shows the
package's folder as the group `forecast/` instead, so a user's defaults list reads
`- forecast/model@model: bilstm`. Relative defaults inside our configs (`model/bilstm` extends
`lstm`) resolve within `forecast/` as they do at home.
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "forecast"  # the group our configs appear under
PACKAGE = "forecast.conf"  # where they are installed (conf/ of the repository, mapped in pyproject.toml)


def _package_folder(package: str) -> Traversable | None:
    """The package's folder, or None when it is not installed."""
    try:
        return resources.files(package)
    except (ModuleNotFoundError, TypeError, ValueError):
        return None


class ForecastConfigSource(ConfigSource):
    """`forecast://PACKAGE`: the YAML files of PACKAGE as the group `forecast/`."""

    @staticmethod
    def scheme() -> str:
        return "forecast"

    def _resource(self, config_path: str) -> Traversable | None:
        """The file or folder behind `forecast/<rest>`; None for paths outside `forecast/`."""
        head, _, rest = config_path.strip("/").partition("/")
        root = _package_folder(self.path)
        if head != GROUP or root is None:
            return None
        return root.joinpath(rest) if rest else root

    def available(self) -> bool:
        root = _package_folder(self.path)
        return root is not None and root.is_dir()

    def is_group(self, config_path: str) -> bool:
        if not config_path.strip("/"):
            return self.available()
        found = self._resource(config_path)
        return found is not None and found.is_dir()

    @staticmethod
    def _schema(config_path: str) -> type | None:
        """The typed schema behind `forecast/<group>/base` (forecast.config), or None."""
        head, _, rest = config_path.strip("/").removesuffix(".yaml").partition("/")
        group, _, name = rest.partition("/")
        if head != GROUP or name != "base":
            return None
        from forecast.config import SCHEMAS

        return SCHEMAS.get(group)

    def is_config(self, config_path: str) -> bool:
        if self._schema(config_path) is not None:
            return True
        found = self._resource(self._normalize_file_name(config_path))
        return found is not None and found.is_file()

    def load_config(self, config_path: str) -> ConfigResult:
        schema = self._schema(config_path)
        if schema is not None:
            return ConfigResult(
                config=OmegaConf.structured(schema),
                path=self.full_path(),
                provider=self.provider,
                header=ConfigSource._get_header_dict(""),
            )
        name = self._normalize_file_name(config_path)
        found = self._resource(name)
        if found is None or not found.is_file():
            raise ConfigLoadError(f"Config not found: {name}")
        text = found.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(text),
            path=self.full_path(),
            provider=self.provider,
            header=ConfigSource._get_header_dict(text),
        )

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if not config_path.strip("/"):
            wanted = results_filter in (None, ObjectType.GROUP)
            return [GROUP] if wanted and self.available() else []
        folder = self._resource(config_path)
        if folder is None or not folder.is_dir():
            return []
        found: list[str] = []
        for entry in folder.iterdir():
            path = f"{config_path.strip('/')}/{entry.name}"
            self._list_add_result(found, path, entry.name, results_filter)
        return sorted(set(found))


def _is_forecast_app(search_path: ConfigSearchPath) -> bool:
    """Whether the app's primary configs are ours (our pipelines): `forecast/` would repeat them."""
    ours = _package_folder(PACKAGE)
    if ours is None:
        return False
    for element in search_path.get_path():
        if element.provider != "main" or element.path is None:
            continue
        if element.path.startswith("pkg://"):
            return element.path.removeprefix("pkg://").replace("/", ".").strip(".") == PACKAGE
        folder = element.path.removeprefix("file://")
        return os.path.realpath(folder) == os.path.realpath(str(ours))
    return False


class ForecastSearchPathPlugin(SearchPathPlugin):
    """Appends `forecast://forecast.conf` to the search path of every Hydra app but our own."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if _is_forecast_app(search_path):
            # Hydra runs this before it composes: the typed schemas our YAML files start from
            # (`base` in conf/data and conf/model, forecast.config) must be stored by then.
            from forecast.config import register_configs

            register_configs()
        else:
            search_path.append(provider="forecast", path=f"forecast://{PACKAGE}")

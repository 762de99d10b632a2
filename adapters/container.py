"""The composition root: a dependency-injector `Container` that builds the backend and the service.

Wiring lives here and only here; the domain and the application never import
``dependency_injector``. There is no module-level container: every caller (the
command line, a test, an embedding LUME service) makes its own.

Providers:

- ``config``: a `providers.Configuration` holding the `Settings` as plain data
  (``container.config.from_dict(...)``, or a parent container's option).
- ``settings``: the validated `Settings` (defaults filled in; a bad key or value
  raises `SettingsError` naming it).
- ``backend``: a `providers.Selector` on ``settings.backend`` choosing
  ``local`` (`LocalBackend`), ``docker`` (`DockerBackend`), ``kubernetes``
  (`KubernetesBackend`), ``fake`` (`InMemoryBackend`) or ``dask``
  (`DaskBackend`). Each choice is a
  `providers.Resource`: built once on first use, shared afterwards, and closed
  by ``container.shutdown_resources()``.
- ``service``: a `providers.Factory` of `SchedulingService` over that one
  backend. Factory, because the service holds no state of its own: every call
  gets a fresh, cheap service while the backend (workers, connections) is
  shared.

Backend classes are imported inside the providers, so the container works with
whichever backends are installed.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Iterator, Mapping, Optional, Union

from dependency_injector import containers, providers
from pydantic import ValidationError

from lume_scheduling.application import Backend, SchedulingService
from lume_scheduling.domain import BackendUnavailableError

from .settings import Settings, SettingsError, validation_problems


def _import(module: str, name: str, kind: str) -> Any:
    """The backend class ``module.name``, or a clear error if it is not installed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise BackendUnavailableError(
            kind, f"{module}.{name} is not available in this installation ({err})"
        ) from err


def validated_settings(config: Optional[Mapping[str, Any]]) -> Settings:
    """The container's configuration as validated `Settings`.

    Raises:
        SettingsError: A key is unknown or a value is invalid.
    """
    return Settings.from_mapping(config, source="container config")


def backend_kind(settings: Settings) -> str:
    """The kind of backend the settings ask for (the `Selector`'s key)."""
    return settings.backend


def local_backend(settings: Settings) -> Iterator[Backend]:
    """A `LocalBackend` sized by ``settings.local``, closed on shutdown."""
    local_backend_type = _import("lume_scheduling.adapters.local", "LocalBackend", "local")
    local = settings.local
    # Isolated-only options go in only when set: with isolated=false the
    # backend then says which one does not apply.
    options: Dict[str, Any] = {}
    if local.max_runs_per_worker is not None:
        options["max_runs_per_worker"] = local.max_runs_per_worker
    if local.fork_first_worker:
        options["fork_first_worker"] = True
    backend = local_backend_type(max_workers=local.max_workers, isolated=local.isolated, **options)
    try:
        yield backend
    finally:
        backend.close()


def server_config(settings: Settings) -> Any:
    """The `PrefectServerConfig` for ``settings.server``.

    Raises:
        SettingsError: The server backend rejects a value.
    """
    config_type = _import("lume_scheduling.adapters.server", "PrefectServerConfig", "server")
    try:
        return config_type.parse_obj(settings.server.backend_options())
    except ValidationError as err:
        problems = [(f"server.{location}", message) for location, message in validation_problems(err)]
        raise SettingsError("container config", problems) from err


def _server_backend(kind: str, class_name: str, settings: Settings) -> Iterator[Backend]:
    backend_type = _import("lume_scheduling.adapters.server", class_name, kind)
    backend = backend_type(server_config(settings))
    try:
        yield backend
    finally:
        backend.close()


def docker_backend(settings: Settings) -> Iterator[Backend]:
    """A `DockerBackend` for the server in ``settings.server``, closed on shutdown."""
    yield from _server_backend("docker", "DockerBackend", settings)


def kubernetes_backend(settings: Settings) -> Iterator[Backend]:
    """A `KubernetesBackend` for the server in ``settings.server``, closed on shutdown."""
    yield from _server_backend("kubernetes", "KubernetesBackend", settings)


def fake_backend(settings: Settings) -> Iterator[Backend]:
    """An `InMemoryBackend` (``server`` from ``settings.fake``), closed on shutdown."""
    fake_type = _import("lume_scheduling.adapters.in_memory", "InMemoryBackend", "fake")
    backend = fake_type(server=settings.fake.server)
    try:
        yield backend
    finally:
        backend.close()


def dask_backend(settings: Settings) -> Iterator[Backend]:
    """A `DaskBackend` on ``settings.dask`` (an address, or an embedded
    LocalCluster), closed on shutdown; runs are published when an address is
    given, unless ``publish_runs`` says otherwise."""
    dask_type = _import("lume_scheduling.adapters.dask", "DaskBackend", "dask")
    dask = settings.dask
    options: Dict[str, Any] = {}
    if dask.address is not None:
        options["address"] = dask.address
    for key in ("n_workers", "threads_per_worker"):
        if getattr(dask, key) is not None:
            options[key] = getattr(dask, key)
    publish = dask.publish_runs if dask.publish_runs is not None else dask.address is not None
    backend = dask_type(publish_runs=publish, **options)
    try:
        yield backend
    finally:
        backend.close()


class Container(containers.DeclarativeContainer):
    """Builds the configured `Backend` and a `SchedulingService` over it.

    Use::

        container = Container()
        container.config.from_dict({"backend": "local", "local": {"max_workers": 2}})
        service = container.service()
        ...
        container.shutdown_resources()   # closes the backend

    In a test, swap the backend in one line:
    ``container.backend.override(InMemoryBackend())`` (the caller then owns and
    closes that backend). An embedding service mounts it with
    ``providers.Container(Container, config=its_config.scheduling)``.
    """

    config = providers.Configuration()

    settings = providers.Callable(validated_settings, config)

    backend = providers.Selector(
        providers.Callable(backend_kind, settings),
        local=providers.Resource(local_backend, settings),
        docker=providers.Resource(docker_backend, settings),
        kubernetes=providers.Resource(kubernetes_backend, settings),
        fake=providers.Resource(fake_backend, settings),
        dask=providers.Resource(dask_backend, settings),
    )

    service = providers.Factory(SchedulingService, backend=backend)


def create_container(settings: Union[Settings, Mapping[str, Any], None] = None) -> Container:
    """A new `Container` configured with ``settings``.

    Args:
        settings: `Settings`, or plain data for them; None means the defaults.

    Returns:
        The container; call ``shutdown_resources()`` on it when done.

    Raises:
        SettingsError: The settings do not validate.
    """
    validated = Settings.from_mapping(settings, source="settings")
    container = Container()
    # Only what was given: keys left out keep the backends' own defaults.
    container.config.from_dict(validated.dict(exclude_unset=True))
    return container


__all__ = [
    "Container",
    "backend_kind",
    "create_container",
    "dask_backend",
    "docker_backend",
    "fake_backend",
    "kubernetes_backend",
    "local_backend",
    "server_config",
    "validated_settings",
]

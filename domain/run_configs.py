"""Run configurations: where a flow run goes and what it gets (labels, env, image...).

These are pure pydantic (v1) models. They validate what a user writes and keep it
exactly as written; turning them into Prefect run configs is an adapter's job.
Every rule rejects bad input with `pydantic.ValidationError` whose message names
the field and says what is wrong, and no other exception type escapes
construction.
"""

from __future__ import annotations

import json
import math
import os
from decimal import Decimal
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Union
from urllib.parse import urlparse

from pydantic import BaseModel, Extra, StrictFloat, StrictInt, StrictStr, validator

from .documents import DocumentError, load_yaml, read_document
from .image import image_reference_problem
from .kubernetes_names import dns1123_subdomain_problem, env_var_name_problem
from .quantity import QuantityError, quantity_value

DEFAULT_LABELS: tuple[str, ...] = ("lume-services",)
MASK = "**********"

# Kinds accepted in configuration files and by `RunConfig.parse_kind`.
RUN_CONFIG_KINDS = ("local", "docker", "kubernetes", "dask")

# docker-py's HostConfig stores these without checking their type.
_BYTE_SIZE_HOST_CONFIG_KEYS = (
    "mem_limit",
    "memswap_limit",
    "mem_reservation",
    "kernel_memory",
    "shm_size",
)
_REMOTE_TEMPLATE_SCHEMES = ("s3", "gcs", "agent")
_LOCAL_TEMPLATE_SCHEMES = ("", "file", "local")


class RunConfig(BaseModel):
    """What every run config has: labels and environment variables.

    Attributes:
        labels: Labels that pick the agents allowed to run the flow. Each is a
            non-empty string without surrounding blanks; duplicates collapse, as
            Prefect treats labels as a set, and the order is kept. Defaults to
            ``["lume-services"]``.
        env: Environment variables for the run. Keys must be non-empty and hold
            neither ``=`` nor NUL. Values are strings without NUL; an int or a
            float is turned into its decimal string (``8`` -> ``"8"``), while a
            boolean or None is rejected, because ``"True"`` and ``"1"`` mean
            different things to different programs. ``repr`` and ``str`` show env
            values masked; ``.dict()`` and ``.json()`` keep the real values,
            because they are what gets sent on.
    """

    kind: ClassVar[str] = "base"

    labels: List[str] = list(DEFAULT_LABELS)
    env: Optional[Dict[str, str]] = None

    class Config:
        extra = Extra.forbid
        validate_assignment = True

    @validator("labels", pre=True)
    def _check_labels(cls, value: Any) -> List[str]:
        if value is None:
            return list(DEFAULT_LABELS)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(
                f"labels must be a list of strings, not {type(value).__name__}"
            )
        labels: List[str] = []
        for position, label in enumerate(value):
            if not isinstance(label, str):
                raise ValueError(
                    f"label {position} must be a string, not {type(label).__name__}"
                )
            if not label.strip():
                raise ValueError(f"label {position} is empty")
            if label != label.strip():
                raise ValueError(f"label {label!r} has surrounding blanks")
            if label not in labels:
                labels.append(label)
        return labels

    @validator("env", pre=True)
    def _check_env(cls, value: Any) -> Optional[Dict[str, str]]:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(
                f"env must be a mapping of names to strings, not {type(value).__name__}"
            )
        env: Dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"env name {name!r} must be a non-empty string")
            if "=" in name or "\0" in name:
                raise ValueError(f"env name {name!r} cannot contain '=' or NUL")
            # Values never appear in messages: env often carries tokens.
            if isinstance(item, bool) or item is None:
                raise ValueError(
                    f"env[{name!r}] must be a string, not {type(item).__name__} "
                    "(write 'true'/'false' or '1'/'0' as a string)"
                )
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"env[{name!r}] must be a finite number or a string")
            if isinstance(item, (int, float)):
                item = str(item)
            if not isinstance(item, str):
                raise ValueError(
                    f"env[{name!r}] must be a string, not {type(item).__name__}"
                )
            if "\0" in item:
                raise ValueError(f"env[{name!r}] cannot contain NUL")
            env[name] = item
        return env

    def __repr_args__(self) -> Any:
        args = list(super().__repr_args__())
        return [
            (name, {key: MASK for key in value} if name == "env" and value else value)
            for name, value in args
        ]


class LocalRunConfig(RunConfig):
    """How a flow runs on the local backend.

    Attributes:
        working_dir: Directory the flow's tasks run in. Must exist when given, and
            is kept as an absolute path. Left out (None), it means "the caller's
            directory when the run starts".
    """

    kind: ClassVar[str] = "local"

    working_dir: Optional[str] = None

    @validator("working_dir", pre=True)
    def _check_working_dir(cls, value: Any) -> Optional[str]:
        if value is None:
            return None
        try:
            path = os.fspath(value)
        except TypeError:
            raise ValueError(
                f"working_dir must be a path, not {type(value).__name__}"
            ) from None
        if isinstance(path, bytes) or not path or "\0" in path:
            raise ValueError("working_dir must be a non-empty text path")
        if not os.path.isdir(path):
            raise ValueError(f"working_dir {path!r} is not an existing directory")
        return os.path.abspath(path)


def _check_image(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"image must be a string, not {type(value).__name__}")
    problem = image_reference_problem(value)
    if problem:
        raise ValueError(f"image {value!r} is not a valid Docker image reference: {problem}")
    return value


def _check_byte_size(key: str, value: Any) -> None:
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            f"host_config[{key!r}] must be a byte count or a string such as '1g', "
            f"not {type(value).__name__}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"host_config[{key!r}] cannot be negative")
        return
    try:
        parse_bytes(value)
    # ArithmeticError: docker-py turns "infk" into int(inf), an OverflowError.
    except (DockerException, ValueError, TypeError, ArithmeticError) as err:
        raise ValueError(f"host_config[{key!r}] is not a byte size: {err}") from None


class DockerRunConfig(RunConfig):
    """How a flow runs in a container started by a Prefect Docker agent.

    Attributes:
        image: The image the flow runs in, ``[registry[:port]/]path[:tag][@digest]``
            with lowercase path components. Required.
        docker_api_version: Docker API version that ``host_config`` is checked
            against, e.g. ``"1.41"``. None means docker-py's own default. No daemon
            is ever asked.
        host_config: Arguments for docker-py's ``create_host_config``; checked by
            building a ``docker.types.HostConfig`` offline.
        ports: Container ports to expose: integers 1-65535, no duplicates.
    """

    kind: ClassVar[str] = "docker"

    image: str
    docker_api_version: Optional[str] = None
    host_config: Optional[Dict[str, Any]] = None
    ports: Optional[List[StrictInt]] = None

    _check_image = validator("image", pre=True, allow_reuse=True)(_check_image)

    @validator("docker_api_version", pre=True)
    def _check_api_version(cls, value: Any) -> Optional[str]:
        if value is None:
            return None
        if not isinstance(value, str) or not _is_api_version(value):
            raise ValueError(
                f"docker_api_version must look like '1.41', not {value!r}"
            )
        return value

    @validator("docker_api_version")
    def _recheck_host_config(cls, value: Optional[str], values: Dict[str, Any]) -> Optional[str]:
        # Only on assignment: at construction host_config comes after this field.
        if values.get("host_config") is not None:
            _check_host_config_for(values["host_config"], value)
        return value

    @validator("host_config", pre=True)
    def _check_host_config(cls, value: Any, values: Dict[str, Any]) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(
                f"host_config must be a mapping of create_host_config arguments, "
                f"not {type(value).__name__}"
            )
        if "docker_api_version" not in values:
            raise ValueError("host_config cannot be checked: docker_api_version is invalid")
        _check_host_config_for(value, values["docker_api_version"])
        return dict(value)

    @validator("ports")
    def _check_ports(cls, value: Optional[List[int]]) -> Optional[List[int]]:
        if value is None:
            return None
        seen: set[int] = set()
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is outside 1-65535")
            if port in seen:
                raise ValueError(f"port {port} is listed twice")
            seen.add(port)
        return value


def _check_host_config_for(value: Mapping[str, Any], api_version: Optional[str]) -> None:
    """Check ``create_host_config`` arguments offline against a Docker API version.

    Raises:
        ValueError: An argument is unknown, of the wrong type or not JSON-serialisable.
    """
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from docker.types import HostConfig

    version = api_version or DEFAULT_DOCKER_API_VERSION
    for key in _BYTE_SIZE_HOST_CONFIG_KEYS:
        if key in value:
            _check_byte_size(key, value[key])
    try:
        HostConfig(version=version, **value)
    except Exception as err:  # docker-py raises TypeError, ValueError and its own
        raise ValueError(f"host_config is not valid for Docker API {version}: {err}") from None
    try:
        json.dumps(dict(value))
    except (TypeError, ValueError, RecursionError) as err:
        raise ValueError(f"host_config must be JSON-serialisable: {err}") from None


def _is_api_version(text: str) -> bool:
    major, dot, minor = text.partition(".")
    return bool(dot) and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii()


Quantity = Union[StrictInt, StrictFloat, StrictStr]


def _check_quantity(value: Any, field: Any) -> Any:
    if value is None:
        return None
    name = field.name
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(
            f"{name} must be a Kubernetes quantity such as '512Mi' or 0.5, "
            f"not {type(value).__name__}"
        )
    try:
        amount = quantity_value(value)
    except QuantityError as err:
        raise ValueError(f"{name} {value!r} is not a Kubernetes quantity: {err}") from None
    if amount < 0:
        raise ValueError(f"{name} {value!r} cannot be negative")
    return value


class KubernetesRunConfig(RunConfig):
    """How a flow runs as a Kubernetes job started by a Prefect Kubernetes agent.

    Attributes:
        image: The image to use; may also come from the job template.
        image_pull_secrets: Names of image pull secrets; override the agent's and
            the template's when given.
        job_template: An in-memory job template (a mapping, or YAML text read with
            a safe loader within the limits of `documents`: size, nesting, alias
            expansion). Excludes ``job_template_path``.
        job_template_path: Where the job template lives. Without a scheme (or with
            ``file``/``local``) it must be an existing file holding a YAML mapping;
            with ``s3``, ``gcs`` or ``agent`` it is kept as written and read at run
            time. Excludes ``job_template``.
        service_account_name: Service account for the job: a DNS-1123 subdomain
            (lowercase letters, digits, ``-`` and ``.``, starting and ending with a
            letter or digit, at most 253 characters), as Kubernetes requires.
        image_pull_policy: ``Always``, ``IfNotPresent`` (default) or ``Never``.
        cpu_limit, cpu_request: CPU as a Kubernetes quantity (``"500m"``, ``2``,
            ``0.5``); defaults 1.0 and 0.5. The request cannot exceed the limit.
        memory_limit, memory_request: Memory as a Kubernetes quantity (``"1.5Gi"``,
            ``"129e6"``) or a byte count. The request cannot exceed the limit.

    Quantities are sent on to Kubernetes exactly as written. ``env`` names must
    also be names Kubernetes accepts for a container's env: letters, digits, ``_``,
    ``-`` and ``.``, not starting with a digit (``MY VAR`` and ``1ST`` are refused);
    see `kubernetes_names`.
    """

    kind: ClassVar[str] = "kubernetes"

    image: Optional[str] = None
    image_pull_secrets: Optional[List[StrictStr]] = None
    job_template: Optional[Dict[str, Any]] = None
    job_template_path: Optional[str] = None
    service_account_name: Optional[StrictStr] = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    cpu_limit: Optional[Quantity] = 1.0
    cpu_request: Optional[Quantity] = 0.5
    memory_limit: Optional[Union[StrictInt, StrictStr]] = None
    memory_request: Optional[Union[StrictInt, StrictStr]] = None

    _check_image = validator("image", pre=True, allow_reuse=True)(_check_image)
    _check_quantities = validator(
        "cpu_limit", "cpu_request", "memory_limit", "memory_request", pre=True, allow_reuse=True
    )(_check_quantity)

    @validator("env")
    def _check_kubernetes_env_names(cls, value: Optional[Dict[str, str]]) -> Optional[Dict[str, str]]:
        for name in value or ():
            problem = env_var_name_problem(name)
            if problem:
                raise ValueError(f"env name {name!r} {problem}: Kubernetes refuses it for a container")
        return value

    @validator("service_account_name")
    def _check_service_account_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            if not value:
                raise ValueError(
                    "service_account_name is empty: leave it out (None) for the "
                    "namespace's default service account"
                )
            problem = dns1123_subdomain_problem(value)
            if problem:
                # A long name is cut: the message must stay one readable line.
                shown = value if len(value) <= 80 else value[:77] + "..."
                raise ValueError(f"service_account_name {shown!r} {problem}")
        return value

    @validator("image_pull_secrets")
    def _check_pull_secrets(cls, value: Optional[List[str]]) -> Optional[List[str]]:
        for secret in value or ():
            if not secret or secret != secret.strip():
                raise ValueError(
                    f"image pull secret {secret!r} must be a non-empty name without blanks"
                )
        return value

    @validator("job_template", pre=True)
    def _check_job_template(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = load_yaml(value)
            except DocumentError as err:
                # One line with the position: the template may hold secrets.
                what = "is not valid YAML: " if err.syntax else ""
                raise ValueError(f"job_template {what}{err}") from None
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(
                f"job_template must be a mapping (a Kubernetes Job), not {type(value).__name__}"
            )
        return value

    @validator("job_template_path", pre=True)
    def _check_job_template_path(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(
                f"job_template_path must be a path, not {type(value).__name__}"
            )
        value = os.fspath(value)
        scheme = urlparse(value).scheme if "://" in value else ""
        if scheme in _REMOTE_TEMPLATE_SCHEMES:
            return value
        if scheme not in _LOCAL_TEMPLATE_SCHEMES:
            raise ValueError(
                f"job_template_path scheme {scheme!r} is not supported: use a local "
                f"path or one of {', '.join(s + '://' for s in _REMOTE_TEMPLATE_SCHEMES)}"
            )
        path = urlparse(value).path if scheme else value
        if not os.path.isfile(path):
            raise ValueError(f"job_template_path {value!r} is not an existing file")
        try:
            template = load_yaml(read_document(path))
        except DocumentError as err:
            what = "is not valid YAML: " if err.syntax else ""
            raise ValueError(f"job_template_path {value!r} {what}{err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"job_template_path {value!r} cannot be read: {err}") from None
        if not isinstance(template, Mapping):
            raise ValueError(f"job_template_path {value!r} does not hold a YAML mapping")
        return value

    @validator("job_template")
    def _check_one_template(cls, value: Any, values: Dict[str, Any]) -> Any:
        # Only on assignment: at construction job_template_path comes after this field.
        if value is not None and values.get("job_template_path") is not None:
            raise ValueError("give job_template or job_template_path, not both")
        return value

    @validator("job_template_path")
    def _check_one_template_path(cls, value: Any, values: Dict[str, Any]) -> Any:
        if value is not None and values.get("job_template") is not None:
            raise ValueError("give job_template or job_template_path, not both")
        return value

    @validator("cpu_request", "memory_request")
    def _check_request_within_limit(cls, value: Any, values: Dict[str, Any], field: Any) -> Any:
        resource = field.name.partition("_")[0]
        _check_request_not_above_limit(resource, value, values.get(f"{resource}_limit"))
        return value

    @validator("cpu_limit", "memory_limit")
    def _check_limit_above_request(cls, value: Any, values: Dict[str, Any], field: Any) -> Any:
        # Only on assignment: at construction the request comes after the limit.
        resource = field.name.partition("_")[0]
        _check_request_not_above_limit(resource, values.get(f"{resource}_request"), value)
        return value

    def resource_value(self, field: str) -> Optional[Decimal]:
        """The exact value of a cpu_* or memory_* field (cores or bytes), or None."""
        value = getattr(self, field)
        return None if value is None else quantity_value(value)


def _check_request_not_above_limit(resource: str, request: Any, limit: Any) -> None:
    """Raise ValueError when a resource request exceeds its limit (both given)."""
    if request is not None and limit is not None:
        if quantity_value(request) > quantity_value(limit):
            raise ValueError(
                f"{resource}_request {request!r} is above {resource}_limit "
                f"{limit!r}; Kubernetes refuses such a pod"
            )


class DaskRunConfig(RunConfig):
    """How a flow runs on a Dask cluster (`DaskBackend`).

    Attributes:
        labels: Recorded with the run (see `DaskBackend.get_labels`); they do
            not pick workers, ``resources`` do.
        env: Set for the run only, on top of the Dask worker's own environment.
        working_dir: Directory the flow's tasks run in, on the Dask worker. A
            relative path is made absolute against the caller's current
            directory; it is not checked here, because the worker may be another
            machine: a directory the worker cannot enter fails the run. None
            (default): the Dask worker's own working directory.
        resources: Dask worker resources the run needs, such as ``{"GPU": 1}``:
            the run goes only to a worker started with at least that much of
            each (``dask worker --resources "GPU=1"``), and holds it while it
            runs. Names are non-empty strings without surrounding blanks;
            amounts are positive finite numbers (an int or a float, not a bool
            or a string). None or ``{}``: any worker.
    """

    kind: ClassVar[str] = "dask"

    working_dir: Optional[str] = None
    resources: Optional[Dict[str, Union[StrictInt, StrictFloat]]] = None

    @validator("working_dir", pre=True)
    def _check_working_dir(cls, value: Any) -> Optional[str]:
        if value is None:
            return None
        try:
            path = os.fspath(value)
        except TypeError:
            raise ValueError(f"working_dir must be a path, not {type(value).__name__}") from None
        if isinstance(path, bytes) or not path or "\0" in path:
            raise ValueError("working_dir must be a non-empty text path")
        return os.path.abspath(path)

    @validator("resources", pre=True)
    def _check_resources(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(
                f"resources must be a mapping of resource names to amounts such as "
                f"{{'GPU': 1}}, not {type(value).__name__}"
            )
        for name, amount in value.items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"resource name {name!r} must be a non-empty string")
            if name != name.strip():
                raise ValueError(f"resource name {name!r} has surrounding blanks")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)):
                raise ValueError(
                    f"resources[{name!r}] must be a positive number, not {type(amount).__name__}"
                )
            # An int is always finite (and may be too large for math.isfinite).
            if (isinstance(amount, float) and not math.isfinite(amount)) or amount <= 0:
                raise ValueError(f"resources[{name!r}] must be a positive finite number, not {amount!r}")
        return dict(value)


RUN_CONFIG_TYPES: dict[str, type[RunConfig]] = {
    LocalRunConfig.kind: LocalRunConfig,
    DockerRunConfig.kind: DockerRunConfig,
    KubernetesRunConfig.kind: KubernetesRunConfig,
    DaskRunConfig.kind: DaskRunConfig,
}


def parse_run_config(kind: str, data: Mapping[str, Any]) -> RunConfig:
    """Build the run config of the named kind from plain data (a parsed file).

    Args:
        kind: ``"local"``, ``"docker"``, ``"kubernetes"`` or ``"dask"``.
        data: The fields, as read from YAML or JSON.

    Returns:
        The validated run config.

    Raises:
        pydantic.ValidationError: A field is missing, unknown or invalid.
        ValueError: ``kind`` is not one of the four kinds.
    """
    try:
        model = RUN_CONFIG_TYPES[kind]
    except KeyError:
        raise ValueError(
            f"run config kind {kind!r} is unknown: use one of {', '.join(RUN_CONFIG_KINDS)}"
        ) from None
    return model.parse_obj(data)

"""Hypothesis strategies for lume-scheduling run configs, shipped for embedders.

Two families:

- Valid values and configs (`labels`, `envs`, `image_references`, `quantities`,
  ..., `local_run_configs`, `docker_run_configs`, `kubernetes_run_configs`,
  `dask_run_configs`, `run_configs`): every rule of `lume_scheduling.domain` accepts them, and a
  config survives a JSON round trip unchanged
  (``type(c).parse_raw(c.json()) == c``).
- Broken input (`invalid_run_config_kwargs`): valid keyword arguments with
  exactly one rule broken, together with the field whose error location the
  resulting `pydantic.ValidationError` must include.

Nothing here writes a file or opens a socket: strategies that need existing
directories or template files use paths that exist anyway (the file system root,
the current directory) or take them as arguments.

Imports only Hypothesis and `lume_scheduling.domain`, so that an embedding service
can use them without prefect or docker.
"""

from __future__ import annotations

import os
from decimal import Decimal, localcontext
from typing import Any, Dict, List, Optional, Tuple, Type, Union

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from lume_scheduling.domain import (
    DaskRunConfig,
    DockerRunConfig,
    KubernetesRunConfig,
    LocalRunConfig,
    RunConfig,
)
from lume_scheduling.domain.quantity import quantity_value

__all__ = [
    "BINARY_SUFFIXES",
    "DECIMAL_SUFFIXES",
    "dask_resources",
    "dask_run_config_kwargs",
    "dask_run_configs",
    "docker_api_versions",
    "docker_run_config_kwargs",
    "docker_run_configs",
    "env_names",
    "env_values",
    "envs",
    "host_configs",
    "image_pull_policies",
    "image_references",
    "invalid_image_references",
    "invalid_kubernetes_env_names",
    "invalid_quantity_texts",
    "invalid_run_config_kwargs",
    "invalid_service_account_names",
    "job_template_paths",
    "job_templates",
    "kubernetes_env_names",
    "kubernetes_envs",
    "kubernetes_run_config_kwargs",
    "kubernetes_run_configs",
    "label_texts",
    "labels",
    "local_run_config_kwargs",
    "local_run_configs",
    "ports",
    "quantities",
    "quantity_texts",
    "run_configs",
    "service_account_names",
    "working_dirs",
]

RunConfigModel = Type[RunConfig]
Kwargs = Dict[str, Any]

BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
DECIMAL_SUFFIXES = ("m", "", "k", "M", "G", "T", "P", "E")
_DIGITS = "0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = _LOWER_ALNUM + _UPPER
# A path that can exist neither as a directory nor as a file: its parent is this
# module's own source file.
_IMPOSSIBLE_PATH = os.path.join(os.path.abspath(__file__), "no-such-entry")


def _words(first: str, rest: str, max_size: int) -> SearchStrategy[str]:
    """Words of one character of ``first`` then up to ``max_size - 1`` of ``rest``
    (much cheaper to draw than the equivalent ``st.from_regex``)."""
    return st.builds(
        lambda head, tail: head + tail, st.sampled_from(first), st.text(rest, max_size=max_size - 1)
    )


# --- labels and env -----------------------------------------------------------


def label_texts() -> SearchStrategy[str]:
    """One valid label: a non-empty string without surrounding blanks.

    Inner blanks and any non-control characters are allowed, as in Prefect.
    """
    return st.text(
        st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20
    ).filter(lambda text: text.strip() == text and text != "")


def labels() -> SearchStrategy[List[str]]:
    """A valid ``labels`` list: unique valid labels, in a drawn order, maybe empty.

    Unique because the model collapses duplicates; with duplicates the stored
    value would differ from the input (see the label tests for that rule).
    """
    return st.lists(label_texts(), unique=True, max_size=4)


def env_names() -> SearchStrategy[str]:
    """A valid environment variable name: non-empty, no ``=``, no NUL."""
    return st.one_of(
        _words(_UPPER + "_", _UPPER + _DIGITS + "_", 16),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="=\x00"),
            min_size=1,
            max_size=12,
        ),
    )


def env_values() -> SearchStrategy[str]:
    """A valid environment variable value: any string without NUL (may be empty)."""
    return st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=20,
    )


def envs() -> SearchStrategy[Optional[Dict[str, str]]]:
    """A valid ``env``: None or a mapping of valid names to valid string values."""
    return st.none() | st.dictionaries(env_names(), env_values(), max_size=4)


_LETTERS = _UPPER + _UPPER.lower()


def kubernetes_env_names() -> SearchStrategy[str]:
    """An env name Kubernetes accepts for a container (and so `KubernetesRunConfig`):
    ``[-._a-zA-Z][-._a-zA-Z0-9]*``, neither ``.`` nor ``..`` nor starting with ``..``."""
    return st.one_of(
        _words(_UPPER + "_", _UPPER + _DIGITS + "_", 16),
        _words("-._" + _LETTERS, "-._" + _LETTERS + _DIGITS, 12).filter(
            lambda name: name != "." and not name.startswith("..")
        ),
    )


def invalid_kubernetes_env_names() -> SearchStrategy[str]:
    """An env name `RunConfig` accepts and Kubernetes refuses: a blank, a leading
    digit, a character outside ``[-._a-zA-Z0-9]`` (non-ASCII letters included),
    ``.``, ``..`` or a leading ``..``."""
    valid = kubernetes_env_names()
    return st.one_of(
        st.sampled_from(["MY VAR", "1ST", ".", "..", "..A", "A\n", "\u00c9T\u00c9", "A:B", "A/B", "A$"]),
        st.tuples(st.sampled_from(_DIGITS), valid).map("".join),
        st.tuples(valid, st.sampled_from(" :/$@+*\t\n\u00e9\u0661"), valid).map("".join),
    )


def kubernetes_envs() -> SearchStrategy[Optional[Dict[str, str]]]:
    """A valid ``env`` of `KubernetesRunConfig`: None or a mapping of
    `kubernetes_env_names` to valid string values."""
    return st.none() | st.dictionaries(kubernetes_env_names(), env_values(), max_size=4)


# --- local --------------------------------------------------------------------


def working_dirs() -> SearchStrategy[Optional[str]]:
    """A valid ``working_dir``: None, or a directory that always exists.

    Draws the file system root, the current directory (absolute, as read when
    drawn) or ``"."`` (relative; the model keeps it absolute). To test with your
    own directories, pass ``st.sampled_from([...])`` to `local_run_configs`.
    """
    return st.one_of(
        st.none(),
        st.just(os.path.abspath(os.sep)),
        st.builds(os.getcwd),
        st.just(os.curdir),
    )


# --- docker -------------------------------------------------------------------


def _registries() -> SearchStrategy[str]:
    # A DNS label: alphanumerics, with dashes inside only.
    label = st.builds(
        lambda head, dashes, tail: f"{head}{dashes}{tail}" if tail else head,
        st.text(_ALNUM, min_size=1, max_size=4),
        st.sampled_from(["", "-", "--"]),
        st.text(_ALNUM, max_size=4),
    )
    dotted = st.lists(label, min_size=2, max_size=3).map(".".join)
    host = st.one_of(st.just("localhost"), dotted)
    port = st.integers(1, 65535).map(lambda number: f":{number}")
    return st.tuples(host, st.one_of(st.just(""), port)).map("".join)


@st.composite
def _path_components(draw: st.DrawFn, *, allow_dot: bool = True) -> str:
    separators = [".", "_", "__", "-", "--"] if allow_dot else ["_", "__", "-", "--"]
    pieces = draw(st.lists(st.text(_LOWER_ALNUM, min_size=1, max_size=8), min_size=1, max_size=3))
    component = pieces[0]
    for piece in pieces[1:]:
        component += draw(st.sampled_from(separators)) + piece
    return component


def _tags() -> SearchStrategy[str]:
    return _words(_ALNUM + "_", _ALNUM + "_.-", 31)


def _digests() -> SearchStrategy[str]:
    algorithm = st.sampled_from(["sha256", "sha512", "multihash+base58", "tarsum.v1"])
    hex_digits = st.text("0123456789abcdef", min_size=32, max_size=64)
    return st.tuples(algorithm, hex_digits).map(lambda parts: f"{parts[0]}:{parts[1]}")


@st.composite
def image_references(draw: st.DrawFn) -> str:
    """A valid Docker image reference, ``[registry[:port]/]path[:tag][@digest]``.

    Path components are lowercase; without a registry, a first path component
    of several never holds a ``.`` (Docker would read it as a registry).
    """
    registry = draw(st.none() | _registries())
    count = draw(st.integers(1, 3))
    if registry is None and count > 1:
        first = draw(_path_components(allow_dot=False))
    else:
        first = draw(_path_components())
    rest = draw(st.lists(_path_components(), min_size=count - 1, max_size=count - 1))
    reference = "/".join(([registry] if registry else []) + [first] + rest)
    tag = draw(st.none() | _tags())
    if tag is not None:
        reference += f":{tag}"
    digest = draw(st.none() | _digests())
    if digest is not None:
        reference += f"@{digest}"
    return reference


def invalid_image_references() -> SearchStrategy[str]:
    """A string that is not a Docker image reference (each breaks one part)."""
    broken = st.sampled_from(
        [
            "",
            " ubuntu",
            "ubuntu ",
            "Ubuntu",
            "library/Ubuntu",
            "ubuntu:",
            "ubuntu@",
            "ubuntu@sha256:abc",
            "ubuntu@sha256",
            ":latest",
            "/ubuntu",
            "ubuntu/",
            "ubuntu//base",
            "ubuntu:-dash",
            "ubuntu:.dot",
            "ubuntu:t\u00e9",
            "ubuntu:" + "a" * 129,
            "a" * 256,
            "local_host:5000/ubuntu",
            "localhost:port/ubuntu",
            "ubu ntu",
            "ubuntu-",
            "_ubuntu",
            "ubuntu..base",
        ]
    )
    # A valid reference made invalid by an uppercase letter in its last path
    # component (tags and registries may hold uppercase, so only touch the path).
    uppercased = image_references().map(_uppercase_path)
    return st.one_of(broken, uppercased)


def _uppercase_path(reference: str) -> str:
    """Put an ``X`` at the start of the last path component of ``reference``."""
    start = reference.partition("@")[0].rfind("/") + 1
    return reference[:start] + "X" + reference[start:]


def docker_api_versions() -> SearchStrategy[Optional[str]]:
    """A valid ``docker_api_version``: None (docker-py's default) or ``"1.25"``...

    Every drawn version supports every option `host_configs` draws (1.25 added
    ``nano_cpus``, ``auto_remove`` and ``init``).
    """
    return st.none() | st.sampled_from(["1.25", "1.30", "1.39", "1.41", "1.43", "1.45"])


def host_configs() -> SearchStrategy[Optional[Dict[str, Any]]]:
    """A valid ``host_config``: None or ``create_host_config`` arguments that
    docker-py accepts at every version `docker_api_versions` draws."""
    byte_size = st.one_of(
        st.integers(0, 2**40),
        st.tuples(st.integers(1, 4096), st.sampled_from(["", "b", "k", "m", "g", "K", "M", "G"])).map(
            lambda parts: f"{parts[0]}{parts[1]}"
        ),
    )
    options: Dict[str, SearchStrategy[Any]] = {
        "shm_size": byte_size,
        "mem_limit": byte_size,
        "nano_cpus": st.integers(0, 64 * 10**9),
        "cpu_shares": st.integers(2, 262144),
        "privileged": st.booleans(),
        "auto_remove": st.booleans(),
        "init": st.booleans(),
        "read_only": st.booleans(),
        "network_mode": st.sampled_from(["bridge", "host", "none"]),
        "extra_hosts": st.dictionaries(
            _words(_LOWER_ALNUM[:26], _LOWER_ALNUM + "-", 11),
            st.sampled_from(["10.0.0.1", "192.168.1.2", "host-gateway"]),
            max_size=2,
        ),
        "dns": st.lists(st.sampled_from(["8.8.8.8", "1.1.1.1"]), max_size=2),
        "cap_add": st.lists(st.sampled_from(["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"]), max_size=2),
        "pids_limit": st.integers(1, 10**6),
    }
    keys = st.lists(st.sampled_from(sorted(options)), unique=True, max_size=4)
    return st.none() | keys.flatmap(
        lambda chosen: st.fixed_dictionaries({key: options[key] for key in chosen})
    )


def ports() -> SearchStrategy[Optional[List[int]]]:
    """A valid ``ports``: None or distinct integers in 1-65535."""
    return st.none() | st.lists(st.integers(1, 65535), unique=True, max_size=5)


# --- kubernetes quantities -----------------------------------------------------


@st.composite
def quantity_texts(draw: st.DrawFn, *, signed: bool = False) -> str:
    """A string in the Kubernetes quantity grammar, e.g. ``"1.5Gi"``, ``".5"``,
    ``"129e6"``, ``"100m"``, ``"+2."``.

    Args:
        signed: Also draw a leading ``-``. Off by default, because run configs
            reject negative resources (``+`` is always allowed).
    """
    sign = draw(st.sampled_from(["", "+", "-"] if signed else ["", "+"]))
    integer = draw(st.text(_DIGITS, max_size=6))
    fraction = draw(st.none() | st.text(_DIGITS, max_size=4))
    if not integer and not fraction:
        integer = draw(st.text(_DIGITS, min_size=1, max_size=6))
    number = integer if fraction is None else f"{integer}.{fraction}"
    exponent = st.tuples(
        st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.integers(0, 30)
    ).map(lambda parts: f"{parts[0]}{parts[1]}{parts[2]}")
    suffix = draw(st.one_of(st.sampled_from(BINARY_SUFFIXES + DECIMAL_SUFFIXES), exponent))
    return f"{sign}{number}{suffix}"


def quantities(*, floats: bool = True) -> SearchStrategy[Union[int, float, str]]:
    """A valid non-negative resource value: a quantity string, an int, or a float.

    Args:
        floats: Also draw finite non-negative floats (allowed for cpu_*, not for
            memory_*, which takes an int byte count or a string).
    """
    numbers: SearchStrategy[Union[int, float, str]] = st.integers(0, 10**12)
    if floats:
        numbers = numbers | st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(quantity_texts(), numbers)


def invalid_quantity_texts() -> SearchStrategy[str]:
    """A string outside the quantity grammar: a fixed list (``"Gi"``,
    ``"1GiB"``, ``"1 Gi"``, ``"abc"``...) and valid quantities spoiled by a
    trailing ``B``, a trailing blank or a leading blank."""
    fixed = st.sampled_from(
        ["", "Gi", "1GiB", "1 Gi", "abc", "1gi", "1KI", "1e", "1e+", "1.2.3", ".", "+", "1Mi1", "1ki", "0x10", "1_000", "1e3.5", "\u0661"]
    )
    spoiled = st.tuples(
        quantity_texts(), st.sampled_from([("", "B"), ("", " "), (" ", "")])
    ).map(lambda parts: f"{parts[1][0]}{parts[0]}{parts[1][1]}")
    return st.one_of(fixed, spoiled)


# --- kubernetes templates ---------------------------------------------------------


def job_templates() -> SearchStrategy[Optional[Dict[str, Any]]]:
    """A valid ``job_template``: None or a JSON-compatible Kubernetes Job mapping."""
    return st.none() | _job_template_mappings()


def _job_template_mappings() -> SearchStrategy[Dict[str, Any]]:
    names = _words(_LOWER_ALNUM[:26], _LOWER_ALNUM + "-", 11)
    return st.builds(
        lambda name, labels_, parallelism: {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": labels_},
            "spec": {
                "parallelism": parallelism,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "flow"}],
                    }
                },
            },
        },
        names,
        st.dictionaries(names, names, max_size=2),
        st.integers(1, 4),
    )


def job_template_paths(
    local_files: SearchStrategy[str] = st.nothing(),
) -> SearchStrategy[Optional[str]]:
    """A valid ``job_template_path``: None, an ``s3://``, ``gcs://`` or ``agent://``
    address (kept as written, read at run time), or one of ``local_files``.

    Args:
        local_files: Paths of existing files holding a YAML mapping, e.g.
            ``st.just(str(path))`` for a file your test wrote. None by default,
            as this module writes no file.
    """
    return st.one_of(st.none(), _remote_template_paths(), local_files)


def _remote_template_paths() -> SearchStrategy[str]:
    key = st.lists(_words(_LOWER_ALNUM, _LOWER_ALNUM + ".-", 11), min_size=1, max_size=3).map("/".join)
    return st.tuples(st.sampled_from(["s3", "gcs", "agent"]), key).map(
        lambda parts: f"{parts[0]}://{parts[1]}"
    )


def _dns1123_labels(max_size: int) -> SearchStrategy[str]:
    # One alphanumeric, or alphanumeric ends around [-a-z0-9]*.
    inner = st.text(_LOWER_ALNUM + "-", max_size=max_size - 2)
    ends = st.sampled_from(_LOWER_ALNUM)
    return ends | st.tuples(ends, inner, ends).map("".join)


def service_account_names() -> SearchStrategy[str]:
    """A valid ``service_account_name``: a DNS-1123 subdomain (labels of lowercase
    letters, digits and ``-``, each starting and ending with a letter or digit,
    joined by ``.``; at most 253 characters)."""
    return st.one_of(
        st.lists(_dns1123_labels(20), min_size=1, max_size=3).map(".".join),
        # Near the 253-character limit: four labels of 63 or fewer characters.
        st.lists(_dns1123_labels(63), min_size=4, max_size=4)
        .map(".".join)
        .filter(lambda name: len(name) <= 253),
    )


def invalid_service_account_names() -> SearchStrategy[str]:
    """A string that is not a DNS-1123 subdomain: empty, uppercase, ``_`` or a blank,
    a label starting or ending with ``-``, an empty label, a trailing newline, or
    longer than 253 characters."""
    valid = st.lists(_dns1123_labels(12), min_size=1, max_size=2).map(".".join)
    return st.one_of(
        st.sampled_from(["", "Default", "-runner", "runner-", "a..b", ".a", "a.", "a_b", "a b", "a\n", "caf\u00e9", "a.-b"]),
        st.tuples(valid, st.sampled_from(["A", "_", " ", "..", ".-", "-", "\u00e9"])).map("".join),
        st.integers(254, 300).map(lambda size: "a" * size),
    )


def image_pull_policies() -> SearchStrategy[str]:
    """A valid ``image_pull_policy``: ``Always``, ``IfNotPresent`` or ``Never``."""
    return st.sampled_from(["Always", "IfNotPresent", "Never"])


# --- keyword arguments and configs ------------------------------------------------


def _common_kwargs(env: Optional[SearchStrategy[Any]] = None) -> Dict[str, SearchStrategy[Any]]:
    return {"labels": labels(), "env": envs() if env is None else env}


def local_run_config_kwargs(
    directories: Optional[SearchStrategy[Optional[str]]] = None,
) -> SearchStrategy[Kwargs]:
    """Valid keyword arguments of `LocalRunConfig` (each field given or left out).

    Args:
        directories: Where ``working_dir`` values come from; default `working_dirs`.
    """
    return st.fixed_dictionaries(
        {},
        optional={**_common_kwargs(), "working_dir": working_dirs() if directories is None else directories},
    )


def docker_run_config_kwargs() -> SearchStrategy[Kwargs]:
    """Valid keyword arguments of `DockerRunConfig` (``image`` always given)."""
    return st.fixed_dictionaries(
        {"image": image_references()},
        optional={
            **_common_kwargs(),
            "docker_api_version": docker_api_versions(),
            "host_config": host_configs(),
            "ports": ports(),
        },
    )


def dask_resources() -> SearchStrategy[Optional[Dict[str, Union[int, float]]]]:
    """None, or Dask worker resources: names such as ``GPU`` or ``memory-gb``,
    amounts positive finite ints or floats (huge ints included)."""
    names = _words(_ALNUM, _ALNUM + "-_.", 16)
    amounts = st.one_of(
        st.integers(min_value=1, max_value=10**30),
        st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False),
    )
    return st.none() | st.dictionaries(names, amounts, max_size=3)


def dask_run_config_kwargs(
    directories: Optional[SearchStrategy[Optional[str]]] = None,
) -> SearchStrategy[Kwargs]:
    """Valid keyword arguments of `DaskRunConfig` (each field given or left out).

    Args:
        directories: Where ``working_dir`` values come from; default: absolute
            or relative paths that need not exist (the worker enters them).
    """
    paths = st.none() | _words(_ALNUM, _ALNUM + "-_./", 24) | _words("/", _ALNUM + "-_./", 24)
    return st.fixed_dictionaries(
        {},
        optional={
            **_common_kwargs(),
            "working_dir": paths if directories is None else directories,
            "resources": dask_resources(),
        },
    )


_RESOURCE_DEFAULTS: Dict[str, Any] = {"cpu_limit": 1.0, "cpu_request": 0.5}


@st.composite
def kubernetes_run_config_kwargs(
    draw: st.DrawFn, local_template_files: SearchStrategy[str] = st.nothing()
) -> Kwargs:
    """Valid keyword arguments of `KubernetesRunConfig`.

    At most one of ``job_template`` and ``job_template_path`` is given; each
    resource request is at most its limit (counting the defaults, cpu_limit 1.0
    and cpu_request 0.5).

    Args:
        local_template_files: Existing YAML files for ``job_template_path``
            (see `job_template_paths`).
    """
    secrets = st.none() | st.lists(
        _words(_LOWER_ALNUM, _LOWER_ALNUM + ".-", 16), max_size=2
    )
    kwargs = draw(
        st.fixed_dictionaries(
            {},
            optional={
                **_common_kwargs(kubernetes_envs()),
                "image": st.none() | image_references(),
                "image_pull_secrets": secrets,
                "service_account_name": st.none() | service_account_names(),
                "image_pull_policy": image_pull_policies(),
                "cpu_limit": st.none() | quantities(),
                "cpu_request": st.none() | quantities(),
                "memory_limit": st.none() | quantities(floats=False),
                "memory_request": st.none() | quantities(floats=False),
            },
        )
    )
    template_kind = draw(st.sampled_from(["none", "inline", "path"]))
    if template_kind == "inline":
        kwargs["job_template"] = draw(job_templates())
    elif template_kind == "path":
        kwargs["job_template_path"] = draw(job_template_paths(local_template_files))
    for resource in ("cpu", "memory"):
        limit_field, request_field = f"{resource}_limit", f"{resource}_request"
        limit = kwargs.get(limit_field, _RESOURCE_DEFAULTS.get(limit_field))
        request = kwargs.get(request_field, _RESOURCE_DEFAULTS.get(request_field))
        if limit is not None and request is not None and _amount(request) > _amount(limit):
            # Swap when both were given; otherwise lower the request to the limit.
            if limit_field in kwargs and request_field in kwargs:
                kwargs[limit_field], kwargs[request_field] = request, limit
            else:
                kwargs[request_field] = limit
    return kwargs


def _amount(value: Union[int, float, str]) -> Decimal:
    return quantity_value(value)


def local_run_configs(
    directories: Optional[SearchStrategy[Optional[str]]] = None,
) -> SearchStrategy[LocalRunConfig]:
    """A valid `LocalRunConfig` built from `local_run_config_kwargs`.

    Args:
        directories: Where ``working_dir`` values come from; default `working_dirs`.
    """
    return local_run_config_kwargs(directories).map(lambda kwargs: LocalRunConfig(**kwargs))


def docker_run_configs() -> SearchStrategy[DockerRunConfig]:
    """A valid `DockerRunConfig` built from `docker_run_config_kwargs`."""
    return docker_run_config_kwargs().map(lambda kwargs: DockerRunConfig(**kwargs))


def kubernetes_run_configs(
    local_template_files: SearchStrategy[str] = st.nothing(),
) -> SearchStrategy[KubernetesRunConfig]:
    """A valid `KubernetesRunConfig` built from `kubernetes_run_config_kwargs`."""
    return kubernetes_run_config_kwargs(local_template_files).map(
        lambda kwargs: KubernetesRunConfig(**kwargs)
    )


def dask_run_configs(
    directories: Optional[SearchStrategy[Optional[str]]] = None,
) -> SearchStrategy[DaskRunConfig]:
    """A valid `DaskRunConfig` built from `dask_run_config_kwargs`."""
    return dask_run_config_kwargs(directories).map(lambda kwargs: DaskRunConfig(**kwargs))


def run_configs() -> SearchStrategy[RunConfig]:
    """A valid run config of any kind: base `RunConfig`, local, docker, kubernetes or dask."""
    base = st.fixed_dictionaries({}, optional=_common_kwargs()).map(lambda kwargs: RunConfig(**kwargs))
    return st.one_of(
        base, local_run_configs(), docker_run_configs(), kubernetes_run_configs(), dask_run_configs()
    )


# --- one broken rule -------------------------------------------------------------


def _invalid_common() -> Dict[str, SearchStrategy[Any]]:
    bad_label = st.sampled_from(["", " ", " lume", "lume ", "\tlume", 1, None, b"lume"])
    return {
        "labels": st.one_of(
            st.sampled_from(["lume-services", 5, {"lume": 1}, b"lume"]),
            st.tuples(labels(), bad_label, st.integers(0, 4)).map(
                lambda parts: parts[0][: parts[2]] + [parts[1]] + parts[0][parts[2] :]
            ),
        ),
        "env": st.one_of(
            st.sampled_from(["A=1", [("A", "1")], 5]),
            st.tuples(
                st.dictionaries(env_names(), env_values(), max_size=2),
                st.sampled_from(
                    [
                        ("", "x"),
                        ("A=B", "x"),
                        ("A\x00", "x"),
                        (1, "x"),
                        ("FLAG", True),
                        ("FLAG", False),
                        ("UNSET", None),
                        ("NUL", "a\x00b"),
                        ("NAN", float("nan")),
                        ("INF", float("inf")),
                        ("LIST", ["a"]),
                        ("BYTES", b"a"),
                    ]
                ),
            ).map(lambda parts: {**parts[0], parts[1][0]: parts[1][1]}),
        ),
    }


def _invalid_fields(model: RunConfigModel) -> Dict[str, SearchStrategy[Any]]:
    fields = _invalid_common()
    if model is LocalRunConfig:
        fields["working_dir"] = st.sampled_from(
            [_IMPOSSIBLE_PATH, os.path.abspath(__file__), "", "dir\x00", 5, b"/", ["/"]]
        )
    if model is DaskRunConfig:
        fields["working_dir"] = st.sampled_from(["", "dir\x00", 5, b"/", ["/"]])
        fields["resources"] = st.one_of(
            st.sampled_from(["GPU=1", ["GPU"], 1]),
            st.tuples(
                st.dictionaries(_words(_ALNUM, _ALNUM, 8), st.integers(1, 4), max_size=2),
                st.sampled_from(
                    [
                        ("", 1),
                        (" GPU", 1),
                        ("GPU ", 1),
                        (1, 1),
                        ("GPU", 0),
                        ("GPU", -1),
                        ("GPU", -0.5),
                        ("GPU", 0.0),
                        ("GPU", float("nan")),
                        ("GPU", float("inf")),
                        ("GPU", True),
                        ("GPU", "1"),
                        ("GPU", None),
                        ("GPU", [1]),
                    ]
                ),
            ).map(lambda parts: {**parts[0], parts[1][0]: parts[1][1]}),
        )
    if model in (DockerRunConfig, KubernetesRunConfig):
        fields["image"] = st.one_of(invalid_image_references(), st.sampled_from([5, b"ubuntu"]))
    if model is DockerRunConfig:
        fields["docker_api_version"] = st.sampled_from(["1", "v1.41", "1.x", "", "1.41.0", 1.41, "\u0661.41"])
        fields["host_config"] = st.sampled_from(
            [
                {"shm_size": ["x"]},
                {"nano_cpus": "0"},
                {"no_such_option": 1},
                {"mem_limit": True},
                {"shm_size": "infk"},
                {"shm_size": -1},
                {"mem_limit": "12x"},
                {"privileged": True, "cpu_shares": "many"},
                "privileged",
                ["privileged"],
            ]
        )
        fields["ports"] = st.sampled_from([[0], [65536], [True], [80, 80], ["80"], [8.5], "80", 80])
    if model is KubernetesRunConfig:
        fields["image_pull_secrets"] = st.sampled_from([[""], [" secret"], [1], "secret"])
        fields["job_template"] = st.sampled_from(
            [
                "kind: [Job",
                "- a\n- list\n",
                "!!python/object/apply:os.system ['true']",
                "just text",
                5,
                ["kind", "Job"],
            ]
        )
        fields["job_template_path"] = st.sampled_from(
            [
                _IMPOSSIBLE_PATH,
                os.path.dirname(os.path.abspath(__file__)),
                "http://example.com/job.yaml",
                "ftp://example.com/job.yaml",
                f"file://{_IMPOSSIBLE_PATH}",
                5,
                b"job.yaml",
            ]
        )
        fields["service_account_name"] = st.sampled_from([5, ["default"]]) | invalid_service_account_names()
        fields["env"] = fields["env"] | st.tuples(
            st.dictionaries(kubernetes_env_names(), env_values(), max_size=2),
            invalid_kubernetes_env_names(),
            env_values(),
        ).map(lambda parts: {**parts[0], parts[1]: parts[2]})
        fields["image_pull_policy"] = st.sampled_from(["always", "Sometimes", "", 1, None])
        for field in ("cpu_limit", "cpu_request", "memory_limit", "memory_request"):
            fields[field] = st.one_of(
                invalid_quantity_texts(),
                st.sampled_from([True, [1], -1, "-1", "-0.5Gi", float("nan"), float("inf"), {"v": 1}]),
            )
        fields["memory_limit"] = fields["memory_limit"] | st.just(1.5)
    return fields


_MODELS: Tuple[RunConfigModel, ...] = (
    RunConfig,
    LocalRunConfig,
    DockerRunConfig,
    KubernetesRunConfig,
    DaskRunConfig,
)


def _valid_kwargs(model: RunConfigModel) -> SearchStrategy[Kwargs]:
    if model is LocalRunConfig:
        return local_run_config_kwargs()
    if model is DockerRunConfig:
        return docker_run_config_kwargs()
    if model is KubernetesRunConfig:
        return kubernetes_run_config_kwargs()
    if model is DaskRunConfig:
        return dask_run_config_kwargs()
    return st.fixed_dictionaries({}, optional=_common_kwargs())


@st.composite
def _one_broken(draw: st.DrawFn, model: RunConfigModel) -> Tuple[RunConfigModel, Kwargs, str]:
    kwargs = dict(draw(_valid_kwargs(model)))
    special = ["unknown field"]
    if model is DockerRunConfig:
        special.append("missing image")
    if model is KubernetesRunConfig:
        special += ["both templates", "cpu request above limit", "memory request above limit"]
    invalid = _invalid_fields(model)
    choice = draw(st.sampled_from(sorted(invalid) + special))
    if choice == "unknown field":
        kwargs["no_such_field"] = draw(st.none() | st.integers() | st.text(max_size=5))
        return model, kwargs, "no_such_field"
    if choice == "missing image":
        del kwargs["image"]
        return model, kwargs, "image"
    if choice == "both templates":
        kwargs["job_template"] = draw(_job_template_mappings())
        kwargs["job_template_path"] = draw(_remote_template_paths())
        return model, kwargs, "job_template_path"
    if choice.endswith("request above limit"):
        resource = choice.split()[0]
        limit = draw(quantities(floats=resource == "cpu"))
        kwargs[f"{resource}_limit"] = limit
        with localcontext() as context:
            # Exact sum (the default 28 digits would round "1e30" + 1 back to 1e30).
            context.prec = 2000
            # Written as plain digits, one unit above the limit.
            kwargs[f"{resource}_request"] = format(_amount(limit) + 1, "f")
        return model, kwargs, f"{resource}_request"
    kwargs[choice] = draw(invalid[choice])
    return model, kwargs, choice


def invalid_run_config_kwargs(
    models: Tuple[RunConfigModel, ...] = _MODELS,
) -> SearchStrategy[Tuple[RunConfigModel, Kwargs, str]]:
    """``(model, kwargs, broken_field)``: valid keyword arguments of ``model`` with
    exactly one rule broken.

    ``model(**kwargs)`` must raise `pydantic.ValidationError` whose error
    locations include ``broken_field`` (and never another exception type).
    Rules broken include: bad labels or env entries (for Kubernetes also env
    names Kubernetes refuses), a service account name that is not a DNS-1123
    subdomain, a missing or malformed
    image, an invalid API version or host_config, bad ports, a non-existent
    working_dir or template file, an unsupported template scheme, unsafe YAML,
    both templates at once, malformed or negative quantities, a request above
    its limit, an unknown image_pull_policy, a Dask resource that is not a
    positive finite number or has an empty name, and an unknown field.

    Args:
        models: The models to draw from; default all five.
    """
    return st.sampled_from(models).flatmap(_one_broken)

"""Names the Kubernetes API server accepts: container env var names and DNS-1123
subdomains (service account names), checked offline.

The rules are those of Kubernetes' own validation, in
``kubernetes/apimachinery``, ``pkg/util/validation/validation.go``:

- ``IsEnvVarName``: the regex ``[-._a-zA-Z][-._a-zA-Z0-9]*`` (matched in full),
  and not ``.``, ``..`` nor anything starting with ``..`` (``hasChDirPrefix``).
  ``pkg/apis/core/validation/validation.go`` (``validateEnv``) applies it to every
  container's ``env[].name``. Clusters with the ``RelaxedEnvironmentVariableValidation``
  feature gate (beta, on by default, from Kubernetes 1.32) accept any printable
  ASCII but ``=``; the strict rule is the one every supported server accepts.
- ``IsDNS1123Subdomain``: at most 253 characters, matching
  ``[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*``;
  ``ValidateServiceAccountName`` (``pkg/apis/core/validation``) is this rule, and
  ``ValidatePodSpec`` applies it to ``serviceAccountName``.

Pure functions: each returns None for an accepted name, else what is wrong.
"""

from __future__ import annotations

import re
from typing import Optional

ENV_VAR_NAME_PATTERN = "[-._a-zA-Z][-._a-zA-Z0-9]*"
DNS1123_LABEL_PATTERN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_PATTERN = rf"{DNS1123_LABEL_PATTERN}(\.{DNS1123_LABEL_PATTERN})*"
DNS1123_SUBDOMAIN_MAX_LENGTH = 253

# fullmatch, never `$`: in Python `$` also matches before a trailing newline.
_ENV_VAR_NAME = re.compile(ENV_VAR_NAME_PATTERN)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_PATTERN)


def env_var_name_problem(name: str) -> Optional[str]:
    """Why Kubernetes refuses ``name`` as a container env var name, or None.

    Args:
        name: The variable's name.

    Returns:
        None when accepted; otherwise a sentence saying what is wrong.
    """
    if not _ENV_VAR_NAME.fullmatch(name):
        return (
            "must consist of letters, digits, '_', '-' or '.', and must not start "
            f"with a digit (regex '{ENV_VAR_NAME_PATTERN}')"
        )
    if name in (".", ".."):
        return f"must not be {name!r}"
    if name.startswith(".."):
        return "must not start with '..'"
    return None


def dns1123_subdomain_problem(name: str) -> Optional[str]:
    """Why ``name`` is not a DNS-1123 subdomain (as Kubernetes checks it), or None.

    Args:
        name: The name, e.g. a service account name.

    Returns:
        None when accepted; otherwise a sentence saying what is wrong.
    """
    if not name:
        return "is empty"
    if len(name) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        return f"is {len(name)} characters long; at most {DNS1123_SUBDOMAIN_MAX_LENGTH} are allowed"
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        return (
            "must be a lowercase DNS-1123 subdomain: lowercase letters, digits, '-' and "
            "'.', starting and ending with a letter or digit, e.g. 'prefect-runner' "
            f"(regex '{DNS1123_SUBDOMAIN_PATTERN}')"
        )
    return None

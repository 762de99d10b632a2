"""What the Kubernetes API server checks in a batch/v1 Job it is asked to create.

Two layers, as in the API server:

- The schema (``kubernetes-validate``'s batch/v1 Job schema of the Kubernetes
  version the client speaks): a value of the wrong type is a decode error, 400
  BadRequest; a missing required field is 422 Invalid. Unknown fields are
  dropped with a ``Warning`` header: the server's default field validation
  ("Warn") when the client sends no ``fieldValidation`` parameter, as the
  python client does (``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go``).
- The rules of ``pkg/apis/batch/validation/validation.go`` (``ValidateJob``) and
  ``pkg/apis/core/validation/validation.go`` (``ValidatePodTemplateSpec``) that
  matter to a flow run's Job: the name (a DNS-1123 subdomain of at most 63
  characters: it becomes the pods' ``job-name`` label), the template's
  ``restartPolicy`` (``Never`` or ``OnFailure``), at least one container, each
  with a DNS-1123 label name and an image, env names (``IsEnvVarName``), and
  ``serviceAccountName`` (``ValidateServiceAccountName``). Name rules are written
  out here from apimachinery's ``pkg/util/validation/validation.go``, not
  imported from the code under test.

Not checked: resource quantities beyond their type, requests above limits,
volumes, probes, security contexts, admission (quotas, pod security).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import kubernetes_validate

KUBERNETES_VERSION = "1.32"  # the API of the kubernetes client below 33

_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")


@dataclass
class Refusal(Exception):
    """The API server's answer to an object it refuses: an HTTP code, a reason and
    the causes (``field``, ``message``)."""

    code: int
    reason: str
    causes: List[Tuple[str, str]] = field(default_factory=list)

    def status(self, name: str) -> Dict[str, Any]:
        """The ``Status`` object of the answer."""
        details = "; ".join(f"{path}: {message}" for path, message in self.causes)
        if self.code == 422:
            message = f'Job.batch "{name}" is invalid: [{details}]'
        else:
            message = f"Job in version \"v1\" cannot be handled as a Job: {details}"
        return {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": self.reason, "code": self.code,
            "details": {
                "name": name, "group": "batch", "kind": "Job",
                "causes": [{"reason": "FieldValueInvalid", "message": m, "field": p} for p, m in self.causes],
            },
        }


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_schema(job: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """Check ``job`` against the batch/v1 Job schema.

    Returns:
        The Job without its unknown fields, and one warning per dropped field.

    Raises:
        Refusal: 400 for a value of the wrong type, 422 for other schema errors.
    """
    job = copy.deepcopy(job)
    warnings: List[str] = []
    for _ in range(100):
        try:
            kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
            return job, warnings
        except kubernetes_validate.ValidationError as err:
            where = _path(err.path)
            if err.validator == "additionalProperties" and isinstance(err.instance, dict):
                known = set(err.schema.get("properties", {}))
                for key in [k for k in err.instance if k not in known]:
                    warnings.append(f'unknown field "{where + "." if where else ""}{key}"')
                    del err.instance[key]
                continue
            code, reason = (400, "BadRequest") if err.validator == "type" else (422, "Invalid")
            raise Refusal(code, reason, [(where, err.message)]) from None
    raise Refusal(422, "Invalid", [("", "too many unknown fields")])


def _dns1123_subdomain_problem(value: str, max_length: int = 253) -> Optional[str]:
    if len(value) > max_length:
        return f"must be no more than {max_length} characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


def _env_var_name_problem(value: str) -> Optional[str]:
    if not _ENV_VAR_NAME.fullmatch(value):
        return ("a valid environment variable name must consist of alphabetic characters, "
                "digits, '_', '-', or '.', and must not start with a digit")
    if value in (".", ".."):
        return f"must not be '{value}'"
    if value.startswith(".."):
        return "must not start with '..'"
    return None


def check_rules(job: Dict[str, Any]) -> None:
    """Check the validation rules of the API server listed in the module docstring.

    Raises:
        Refusal: 422 Invalid with every cause found.
    """
    causes: List[Tuple[str, str]] = []

    def invalid(path: str, value: Any, problem: str) -> None:
        causes.append((path, f'Invalid value: "{value}": {problem}'))

    metadata = job.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    else:
        problem = _dns1123_subdomain_problem(name, 63)
        if problem:
            invalid("metadata.name", name, problem)
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    base = "spec.template.spec"
    policy = pod.get("restartPolicy", "Always")  # the API server's default before validation
    if policy not in ("Never", "OnFailure"):
        causes.append((f"{base}.restartPolicy",
                       f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
    account = pod.get("serviceAccountName")
    if account:
        problem = _dns1123_subdomain_problem(account)
        if problem:
            invalid(f"{base}.serviceAccountName", account, problem)
    containers = pod.get("containers") or []
    if not containers:
        causes.append((f"{base}.containers", "Required value"))
    for index, container in enumerate(containers):
        where = f"{base}.containers[{index}]"
        cname = container.get("name") or ""
        if not cname:
            causes.append((f"{where}.name", "Required value"))
        elif len(cname) > 63 or not re.fullmatch(_DNS1123_LABEL, cname):
            invalid(f"{where}.name", cname, "a lowercase RFC 1123 label must consist of lower case "
                    "alphanumeric characters or '-', and must start and end with an alphanumeric character")
        if not container.get("image"):
            causes.append((f"{where}.image", "Required value"))
        for position, entry in enumerate(container.get("env") or []):
            problem = _env_var_name_problem(entry.get("name") or "")
            if problem:
                invalid(f"{where}.env[{position}].name", entry.get("name"), problem)
    if causes:
        raise Refusal(422, "Invalid", causes)


def check_job(job: Any) -> Tuple[Dict[str, Any], List[str]]:
    """Everything the API server checks before it stores a Job.

    Returns:
        The Job as stored (unknown fields dropped) and the warnings.

    Raises:
        Refusal: The Job is refused (400 or 422).
    """
    if not isinstance(job, dict):
        raise Refusal(400, "BadRequest", [("", "the body is not a JSON object")])
    if job.get("apiVersion") != "batch/v1" or job.get("kind") != "Job":
        raise Refusal(400, "BadRequest", [("", f"expected batch/v1 Job, not {job.get('apiVersion')} {job.get('kind')}")])
    stored, warnings = check_schema(job)
    check_rules(stored)
    return stored, warnings

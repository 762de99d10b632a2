"""Names the Kubernetes API server refuses are refused offline by
`KubernetesRunConfig` (issue 9, item 4): container env var names and the service
account name (a DNS-1123 subdomain)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from lume_scheduling.adapters.testing import strategies as rs
from lume_scheduling.domain import DockerRunConfig, KubernetesRunConfig, LocalRunConfig, RunConfig
from lume_scheduling.domain.kubernetes_names import (
    DNS1123_SUBDOMAIN_MAX_LENGTH,
    dns1123_subdomain_problem,
    env_var_name_problem,
)

ENV_FIRST = set("-._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
ENV_REST = ENV_FIRST | set("0123456789")
LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")
# Characters near the rules' edges: every allowed class, blanks, separators,
# non-ASCII letters and digits, a newline (a `$` regex would let "A\n" through).
EDGE_ALPHABET = "aZz09_-.: /\n\t=\u00e9\u0661A"


def kubernetes_accepts_env_name(name: str) -> bool:
    """apimachinery's IsEnvVarName, written out without a regex (the oracle)."""
    if not name or name[0] not in ENV_FIRST or any(c not in ENV_REST for c in name):
        return False
    return name not in (".", "..") and not name.startswith("..")


def is_dns1123_subdomain(name: str) -> bool:
    """apimachinery's IsDNS1123Subdomain, written out without a regex (the oracle)."""
    if not name or len(name) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        return False
    return all(
        label and set(label) <= LABEL_CHARS and label[0] != "-" and label[-1] != "-"
        for label in name.split(".")
    )


def error_of(**kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        KubernetesRunConfig(**kwargs)
    return caught.value


class TestEnvVarNameRule:
    @given(name=st.text(EDGE_ALPHABET, min_size=1, max_size=6))
    @example(name="A\n")
    @example(name="..")
    @example(name="..A")
    @example(name=".A")
    def test_agrees_with_kubernetes_rule(self, name: str) -> None:
        assert (env_var_name_problem(name) is None) == kubernetes_accepts_env_name(name)

    @pytest.mark.parametrize("name", ["my.env-name", "MY_ENV.NAME", "MyEnvName1", "_", "-", ".A", "a..b"])
    def test_kubernetes_examples_accepted(self, name: str) -> None:
        assert env_var_name_problem(name) is None

    @pytest.mark.parametrize("name", ["MY VAR", "1ST", ".", "..", "..A", "A\n", "\u00c9T\u00c9", "A=B", ""])
    def test_refused_names_say_why(self, name: str) -> None:
        problem = env_var_name_problem(name)
        assert problem and ("must" in problem)


class TestDns1123SubdomainRule:
    @given(name=st.text("az09-.A_ \n\u00e9", min_size=0, max_size=8))
    @example(name="a\n")
    @example(name="a..b")
    def test_agrees_with_kubernetes_rule(self, name: str) -> None:
        assert (dns1123_subdomain_problem(name) is None) == is_dns1123_subdomain(name)

    def test_length_limit_is_253(self) -> None:
        assert dns1123_subdomain_problem("a" * 253) is None
        assert "253" in (dns1123_subdomain_problem("a" * 254) or "")


class TestKubernetesRunConfigEnvNames:
    @given(env=rs.kubernetes_envs())
    def test_names_kubernetes_accepts_are_kept(self, env: Any) -> None:
        assert KubernetesRunConfig(env=env).env == env

    @given(name=rs.invalid_kubernetes_env_names())
    def test_names_kubernetes_refuses_are_refused_at_env(self, name: str) -> None:
        error = error_of(env={"GOOD": "1", name: "secret-value"})
        assert [e["loc"] for e in error.errors()] == [("env",)]
        message = error.errors()[0]["msg"]
        assert repr(name) in message and "Kubernetes" in message
        assert "secret-value" not in str(error)

    @pytest.mark.parametrize("name", ["MY VAR", "1ST"])
    def test_issue_examples_refused(self, name: str) -> None:
        assert "must not start with a digit" in str(error_of(env={name: "x"}))

    @given(name=rs.invalid_kubernetes_env_names(), model=st.sampled_from([RunConfig, LocalRunConfig, DockerRunConfig]))
    def test_other_kinds_keep_their_own_rule(self, name: str, model: type) -> None:
        extra = {"image": "ubuntu"} if model is DockerRunConfig else {}
        assert model(env={name: "x"}, **extra).env == {name: "x"}

    def test_assigned_env_is_checked_too(self) -> None:
        config = KubernetesRunConfig()
        with pytest.raises(ValidationError) as caught:
            config.env = {"MY VAR": "x"}
        assert caught.value.errors()[0]["loc"] == ("env",)


class TestServiceAccountName:
    @given(name=rs.service_account_names())
    def test_dns1123_subdomains_kept(self, name: str) -> None:
        assert KubernetesRunConfig(service_account_name=name).service_account_name == name

    @given(name=rs.invalid_service_account_names())
    def test_others_refused_naming_the_field(self, name: str) -> None:
        error = error_of(service_account_name=name)
        assert [e["loc"] for e in error.errors()] == [("service_account_name",)]
        assert "service_account_name" in error.errors()[0]["msg"]

    def test_uppercase_refused_saying_what_is_allowed(self) -> None:
        assert "lowercase DNS-1123 subdomain" in str(error_of(service_account_name="Default"))

    def test_empty_refused_pointing_to_none(self) -> None:
        assert "leave it out" in str(error_of(service_account_name=""))

    def test_a_long_name_is_cut_in_the_message(self) -> None:
        error = error_of(service_account_name="a" * 300)
        assert "300 characters" in str(error) and "a" * 100 not in str(error)

    def test_none_is_the_default(self) -> None:
        assert KubernetesRunConfig().service_account_name is None

"""`PrefectServerConfig`: how a server backend reaches its Prefect 1 Server."""

from __future__ import annotations

import uuid
from typing import Any, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, Extra, SecretStr, root_validator, validator

from lume_scheduling.domain.image import image_reference_problem


class PrefectServerConfig(BaseModel):
    """Connection and polling settings of one Prefect 1 Server.

    Each backend builds its own client from these; nothing is read from or written
    to prefect's global config or the user's home.

    Attributes:
        api_url: The server's GraphQL endpoint (``http(s)://host:port[/graphql]``).
        api_key: Sent as a bearer token when set; never shown in a repr or log.
        tenant_id: The tenant (a UUID); None asks the server for its first tenant.
        default_image: Image flows run in when ``register_flow`` gets none; a valid
            Docker image reference.
        ui_url: The server's UI, for the flow address ``register_flow`` prints.
        request_timeout: Seconds one HTTP request may take.
        request_retries: Extra attempts after a refused connection, a time-out or
            an HTTP 5xx answer.
        request_backoff: Seconds before the first retry; doubles each time.
        poll_interval: Seconds before the first state query of a run.
        poll_backoff: Factor the interval grows by after each query that finds
            the run in the same state (so a run is seen ended at most about as
            late as it had run, and never more than ``poll_max_interval``).
        poll_max_interval: The longest interval between two state queries (the
            same 10 s as prefect's ``watch_flow_run``).
        cancel_timeout: Seconds ``cancel`` waits for the run to reach Cancelled.
        agent_check_after: Seconds a run may stay scheduled before the backend
            asks the server whether an agent with its labels is polling (one
            query, one warning); None never asks.
        task_run_page_size: Task runs fetched per query (the server caps pages).
    """

    api_url: str = "http://localhost:4200/graphql"
    api_key: Optional[SecretStr] = None
    tenant_id: Optional[str] = None
    default_image: Optional[str] = None
    ui_url: Optional[str] = None
    request_timeout: float = 15.0
    request_retries: int = 2
    request_backoff: float = 0.5
    poll_interval: float = 1.0
    poll_backoff: float = 2.0
    poll_max_interval: float = 10.0
    cancel_timeout: float = 30.0
    agent_check_after: Optional[float] = 15.0
    task_run_page_size: int = 1000

    class Config:
        extra = Extra.forbid
        allow_mutation = False

    @validator("api_url", "ui_url")
    def _check_url(cls, value: Optional[str], field: Any) -> Optional[str]:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{field.name} must be an http(s) URL with a host, not {value!r}")
        return value

    @validator("tenant_id")
    def _check_tenant(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"tenant_id must be a UUID, not {value!r}") from None

    @validator("default_image")
    def _check_image(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        problem = image_reference_problem(value)
        if problem:
            raise ValueError(f"default_image {value!r} is not a valid Docker image reference: {problem}")
        return value

    @validator(
        "request_timeout", "poll_interval", "poll_max_interval", "cancel_timeout", "agent_check_after"
    )
    def _check_positive(cls, value: Optional[float], field: Any) -> Optional[float]:
        if value is not None and not value > 0:
            raise ValueError(f"{field.name} must be a positive number of seconds, not {value!r}")
        return value

    @validator("request_backoff")
    def _check_backoff(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"request_backoff cannot be negative, not {value!r}")
        return value

    @validator("request_retries")
    def _check_retries(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"request_retries cannot be negative, not {value!r}")
        return value

    @validator("poll_backoff")
    def _check_poll_backoff(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"poll_backoff must be at least 1, not {value!r}")
        return value

    @validator("task_run_page_size")
    def _check_page(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"task_run_page_size must be at least 1, not {value!r}")
        return value

    @root_validator(skip_on_failure=True)
    def _check_intervals(cls, values: dict) -> dict:
        if values["poll_max_interval"] < values["poll_interval"]:
            raise ValueError("poll_max_interval cannot be below poll_interval")
        return values

    def api_key_value(self) -> Optional[str]:
        """The API key in clear, for the Authorization header only."""
        return None if self.api_key is None else self.api_key.get_secret_value()

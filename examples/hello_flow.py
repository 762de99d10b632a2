"""A small LUME-style flow for the README: greets, then sums the first squares.

Run it on the local backend::

    from lume_scheduling.adapters.local import LocalBackend
    from examples.hello_flow import flow   # or load examples/hello_flow.py by path

    with LocalBackend() as backend:
        print(backend.run_and_return({"name": "LUME", "n": 4}, flow=flow))
    # {'greeting-1': 'Hello, LUME!', 'n': 4, 'name': 'LUME',
    #  'squares-1': [1, 4, 9, 16], 'sum_of_squares-1': 30}

or through the command line: ``lume-scheduling run examples/hello_flow.py -p name=LUME -p n=4``.
"""

from __future__ import annotations

from typing import List

from prefect import Flow, Parameter, task


@task(name="greeting")
def greeting(name: str) -> str:
    """A greeting for ``name``."""
    return f"Hello, {name}!"


@task(name="squares")
def squares(n: int) -> List[int]:
    """The squares of 1..n."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, not {n!r}")
    return [i * i for i in range(1, n + 1)]


@task(name="sum_of_squares")
def sum_of_squares(values: List[int]) -> int:
    """Their sum (n(n+1)(2n+1)/6)."""
    return sum(values)


with Flow("hello") as flow:
    name = Parameter("name", default="LUME")
    n = Parameter("n", default=4)
    greeting(name)
    sum_of_squares(squares(n))


if __name__ == "__main__":
    from lume_scheduling.adapters.local import LocalBackend

    with LocalBackend() as backend:
        print(backend.run_and_return({"name": "LUME", "n": 4}, flow=flow))

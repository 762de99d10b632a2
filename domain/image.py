"""Docker image references: ``[registry[:port]/]path[:tag][@digest]``.

Follows the grammar of the distribution project's ``reference`` package: path
components are lowercase alphanumerics joined by ``.``, ``_``, ``__`` or dashes; a
first component containing ``.`` or ``:``, or equal to ``localhost``, names a
registry; a tag is at most 128 word characters, dots and dashes; a digest is
``algorithm:hex`` with at least 32 hex digits.
"""

from __future__ import annotations

import re

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
# ASCII only: Python's \w would also take letters and digits of any script.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_MAX_NAME_LENGTH = 255


def image_reference_problem(reference: str) -> str | None:
    """Say what is wrong with a Docker image reference, or None when it is valid.

    Args:
        reference: The reference as written, e.g. ``"ghcr.io/slac/lume:1.0"``.

    Returns:
        None for a valid reference, else a sentence naming the faulty part.
    """
    if not reference:
        return "an image reference cannot be empty"
    if reference != reference.strip():
        return "an image reference cannot have surrounding blanks"
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return f"digest {digest!r} is not of the form algorithm:hex (32+ hex digits)"
    tag = ""
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return (
                f"tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', "
                "not starting with '.' or '-'"
            )
    if not name:
        return "an image reference needs a repository name"
    if len(name) > _MAX_NAME_LENGTH:
        return f"the repository name is longer than {_MAX_NAME_LENGTH} characters"
    components = name.split("/")
    first = components[0]
    if len(components) > 1 and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    ):
        if not _REGISTRY.fullmatch(first):
            return f"registry {first!r} is not a valid host[:port]"
        components = components[1:]
    for component in components:
        if not _PATH_COMPONENT.fullmatch(component):
            return (
                f"path component {component!r} must be lowercase letters and digits, "
                "separated by '.', '_', '__' or '-'"
            )
    return None

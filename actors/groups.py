"""Reading trio's exception groups (strict: errors from nurseries always arrive grouped)."""

from __future__ import annotations


def single_leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member groups, else `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """Every non-group exception in a (nested) group, in order."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found

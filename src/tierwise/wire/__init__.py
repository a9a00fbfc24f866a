"""Wire formats: each API's request and response shapes, translated to and from tierwise.messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tierwise.errors import RequestError

Body = TypeVar("Body", bound=BaseModel)


def validate_body(
    model: type[Body],
    data: Any,
    *,
    param: Callable[[tuple[int | str, ...]], str],
    unknown: Callable[[str], str],
) -> Body:
    """``data`` as ``model``, or a RequestError naming the first wrong field in the API's own style:
    ``param`` spells a field's location, ``unknown`` the message for a key the API does not have."""
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object", code="invalid_request")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = param(first["loc"])
        if first["type"] == "extra_forbidden":
            raise RequestError(unknown(where), param=where) from None
        raise RequestError(f"{where}: {first['msg']}", param=where or None) from None

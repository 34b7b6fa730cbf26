"""The body of every error response."""

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    detail: str

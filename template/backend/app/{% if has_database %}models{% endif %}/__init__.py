"""ORM models; importing this package registers them all on `Base.metadata`."""

from app.models.item import Item

__all__ = ["Item"]

"""The example resource."""

from datetime import UTC, datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime

NAME_MAX_LENGTH = 100
DESCRIPTION_MAX_LENGTH = 1000


def _now() -> datetime:
    return datetime.now(UTC)


class Item(Base):
    __tablename__ = "items"
    # MySQL/MariaDB: full Unicode (4-byte characters) whatever the server default is.
    __table_args__ = ({"mysql_charset": "utf8mb4"},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH), unique=True)
    description: Mapped[str | None] = mapped_column(String(DESCRIPTION_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=_now, onupdate=_now
    )

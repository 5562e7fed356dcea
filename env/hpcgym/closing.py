"""`Closing`: the `with` statement for the objects that hold something until their `close()`."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """A base for a class with a `close()`: `with obj as o:` is `obj`, closed when the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

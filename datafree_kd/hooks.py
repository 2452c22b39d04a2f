"""Objects that own forward hooks on a model and must take them all away again."""

from __future__ import annotations

from types import TracebackType

from torch.utils.hooks import RemovableHandle


class HookOwner:
    """Base for hook-installing helpers: ``remove()`` (idempotent) and use as a context manager.

    Subclasses append to ``self._handles`` and may override ``_after_remove`` to drop state.
    """

    _handles: list[RemovableHandle]

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def remove(self) -> None:
        """Remove every hook this object added; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._after_remove()

    def _after_remove(self) -> None:
        pass

    def __enter__(self) -> "HookOwner":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

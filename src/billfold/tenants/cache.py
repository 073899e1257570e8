"""API keys already verified by this process, so a request need not look its key up."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from billfold.kit.changes import Generations
from billfold.tenants.service import Principal


class PrincipalCache:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, Principal] = OrderedDict()
        self._generations = Generations()
        self._max_entries = max_entries

    @staticmethod
    def fingerprint(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def get(self, fingerprint: str) -> Principal | None:
        return self._entries.get(fingerprint)

    def stamp(self) -> tuple[int, int]:
        return self._generations.stamp("keys")

    def store(self, fingerprint: str, principal: Principal, stamp: tuple[int, int]) -> None:
        if not self._generations.current("keys", stamp):
            return
        self._entries[fingerprint] = principal
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def on_change(self, topic: str) -> None:
        # Key revocations and catalog changes are rare: drop everything and re-verify.
        if topic.startswith(("key:", "catalog:")):
            self.reset()

    def reset(self) -> None:
        self._generations.reset()
        self._entries.clear()

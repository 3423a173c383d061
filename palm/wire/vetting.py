"""Vetting ``map`` answers on the client: authentic, and dependency refusals retried.

A worker that lacks a shipped function's packages answers a (tagged)
dependency refusal instead of running the chunk. :class:`DependencyRetry`,
the job stream's ``check``, turns such an answer down a few times so the
chunk goes out again and a worker that has the packages may take it; after
that the refusal is the answer, and the caller gets the
:class:`~palm.errors.DependencyError`.
"""

from __future__ import annotations

import hmac
import pickle
from collections.abc import Callable

from palm.wire.shipping import _ANSWER, _DEP_MARK, _TAG, _mac

__all__ = ["DependencyRetry", "dependency_refusal"]

#: where a dependency refusal's kind starts: after the tag, and the pickle's
#: protocol, frame and MARK opcodes
_MARK_AT = _TAG + 12


def dependency_refusal(answer: bytes) -> bool:
    """Whether an (authenticated) answer says its worker lacks the function's packages."""
    # a pickled tuple's first string follows the protocol, frame and MARK opcodes
    # (12 bytes): unpickle only an answer that starts like one
    return answer.startswith(_DEP_MARK, _MARK_AT) and _kind(answer) == "dep"


def _kind(answer: bytes) -> str | None:
    try:
        body = pickle.loads(answer[_TAG:])
    except Exception:
        return None
    return body[0] if type(body) is tuple and body and type(body[0]) is str else None


class DependencyRetry:
    """Vets map answers: authentic, and a dependency refusal only after retries.

    A chunk a worker refused for want of a package goes out again (the master
    may hand it to a worker that has the package) up to ``retries`` times;
    then its refusal is the answer, and the caller gets the DependencyError.
    ``on_forged`` hears only of answers that failed authentication.
    """

    def __init__(
        self, secret: bytes, retries: int, on_forged: Callable[[bytes], None] | None = None
    ) -> None:
        self.secret = secret
        self.retries = retries
        self.on_forged = on_forged
        #: chunks (by tag) refused so far, and how many times
        self.refused: dict[bytes, int] = {}
        self._was_refusal = False

    def check(self, chunk: bytes, answer: bytes) -> bool:
        """Whether ``answer`` is the answer to ``chunk`` (False: send the chunk again)."""
        tag = answer[:_TAG]  # authentic(), inlined: this runs for every answer
        if len(tag) != _TAG or not hmac.compare_digest(
            tag, _mac(self.secret, _ANSWER, chunk[:_TAG], answer[_TAG:])
        ):
            return False
        if not answer.startswith(_DEP_MARK, _MARK_AT) or not dependency_refusal(answer):
            return True
        times = self.refused.get(chunk[:_TAG], 0)
        if times >= self.retries:
            return True
        self.refused[chunk[:_TAG]] = times + 1
        self._was_refusal = True
        return False

    def on_reject(self, answer: bytes) -> None:
        """Hears of each answer :meth:`check` turned down: forgeries go to ``on_forged``."""
        if self._was_refusal:
            self._was_refusal = False
        elif self.on_forged is not None:
            self.on_forged(answer)

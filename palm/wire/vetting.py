"""Vetting ``map`` answers on the client: authentic, and dependency refusals retried.

A worker that lacks a shipped function's packages answers a (tagged)
dependency refusal instead of running the chunk. :class:`DependencyRetry`,
the job stream's ``check``, turns such an answer down a few times so the
chunk goes out again and a worker that has the packages may take it; after
that the refusal is the answer, and the caller gets the
:class:`~palm.errors.DependencyError`. A worker that lacks a lean chunk's
function answers that it needs it: ``check`` then gives the same chunk with
the function's bytes (:func:`~palm.wire.shipping.with_function`) to send in
its place.
"""

from __future__ import annotations

import hmac
import pickle
from collections.abc import Callable

from palm.wire.shipping import (
    _ANSWER,
    _DEP_MARK,
    _NEED_MARK,
    _TAG,
    _mac,
    chunk_digest,
    is_lean,
    needed_digest,
    with_function,
)

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
    ``functions`` (digest -> shipped bytes) serves workers that ask for a lean
    chunk's function: :meth:`check` answers with the chunk made full.
    """

    def __init__(
        self,
        secret: bytes,
        retries: int,
        on_forged: Callable[[bytes], None] | None = None,
        functions: dict[bytes, bytes] | None = None,
    ) -> None:
        self.secret = secret
        self.retries = retries
        self.on_forged = on_forged
        self.functions = functions or {}
        #: how many chunks went out again with their function's bytes
        self.shipped_again = 0
        #: chunks (by tag) refused so far, and how many times
        self.refused: dict[bytes, int] = {}
        self._was_refusal = False

    def check(self, chunk: bytes, answer: bytes) -> bool | bytes:
        """Whether ``answer`` is the answer to ``chunk`` (False: send the chunk again;
        bytes: send these instead, the chunk with its function)."""
        tag = answer[:_TAG]  # authentic(), inlined: this runs for every answer
        if len(tag) != _TAG or not hmac.compare_digest(
            tag, _mac(self.secret, _ANSWER, chunk[:_TAG], answer[_TAG:])
        ):
            return False
        if _NEED_MARK in answer[_TAG : _TAG + 24]:
            full = self._full(chunk, answer)
            if full is not None:
                return full
        if not answer.startswith(_DEP_MARK, _MARK_AT) or not dependency_refusal(answer):
            return True
        times = self.refused.get(chunk[:_TAG], 0)
        if times >= self.retries:
            return True
        self.refused[chunk[:_TAG]] = times + 1
        self._was_refusal = True
        return False

    def _full(self, chunk: bytes, answer: bytes) -> bytes | None:
        """``chunk`` with the bytes of the function ``answer`` asks for, if it is lean."""
        digest = needed_digest(answer)
        fn_bytes = self.functions.get(digest) if digest is not None else None
        if fn_bytes is None or not is_lean(chunk) or chunk_digest(chunk) != digest:
            return None  # then decoding the answer says what went wrong
        self.shipped_again += 1
        return with_function(chunk, fn_bytes)

    def on_reject(self, answer: bytes) -> None:
        """Hears of each answer :meth:`check` turned down: forgeries go to ``on_forged``."""
        if self._was_refusal:
            self._was_refusal = False
        elif self.on_forged is not None:
            self.on_forged(answer)

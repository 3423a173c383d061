"""``map`` over generic workers: shipping functions and chunks of items.

Both directions are authenticated with HMAC-SHA256 and the cluster secret,
one tag per chunk (never per item), checked with :func:`hmac.compare_digest`
before anything is unpickled:

* a chunk is ``tag | nonce | digest | len(fn) | fn | items``: ``items`` a
  pickle of the list of items (of a ``range``, for a map over one: a few
  bytes however long), ``nonce`` 16 random bytes that make every
  chunk unique, ``digest`` the function's (16 bytes of SHA-256), ``tag`` the
  HMAC of ``"palm-chunk" + nonce + digest + items``. The function's bytes are
  bound by the signed digest: a worker hashes them before it unpickles them.
  A worker runs nothing whose tag does not verify.
* an answer is ``tag + body``: ``body`` a pickle of ``("ok", results,
  seconds)`` or ``("err", index, type, message, traceback)`` for the first
  item that failed, ``tag`` the HMAC of ``"palm-answer" + chunk tag + body``.
  The chunk's tag binds the answer to the one chunk it answers, so an answer
  cannot be replayed for another chunk. A client unpickles no answer whose
  tag does not verify.
* a worker that cannot verify a chunk (no secret, another secret) cannot tag
  either: it answers a *refusal*, ``"palm-refused\\0"`` and UTF-8 text, which
  is never unpickled and counts as no answer.

The function is pickled with cloudpickle behind its dependency spec
(:mod:`palm.wire.deps`); the digest covers both. The bytes are kept per
function object and shipped again while nothing cloudpickle would read from
the function has changed (:mod:`palm.wire.fncache`), else pickled anew. It travels
once per worker, not per chunk: a worker keeps functions by digest, and a
*lean* chunk (``len(fn) == 0``) names the function by its digest only. A
worker that lacks it (a new or restarted worker, an evicted cache) answers
``("need", digest)``, tagged like any answer, and the client sends that chunk
again *full*: :func:`with_function` puts the function's bytes back, under the
same tag and nonce, so the answer still binds to it. A worker checks the spec
once per function (kept by digest with the unpickled function) before it
unpickles anything, and answers ``("dep", package, wanted, found, host,
worker, detail)`` for a function it cannot run: the client raises
:class:`~palm.errors.DependencyError`.

The secret comes from the ``secret`` argument or ``PALM_SECRET``; without
either, :func:`secret_for` falls back to a per-user secret file only when
every endpoint is on this machine, and :func:`require_secret` refuses
anything else.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import pickle
import secrets
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cloudpickle

from palm.errors import ConfigError, DependencyError, ProtocolError, RemoteError
from palm.wire import deps
from palm.wire.chunking import ChunkPlanner
from palm.wire.fncache import FunctionCache

__all__ = [
    "MAP_FUNCTION",
    "NO_SECRET_HELP",
    "ChunkPlanner",
    "RejectCounter",
    "authentic",
    "chunk_digest",
    "decode_answer",
    "encode_chunk",
    "is_lean",
    "is_loopback",
    "local_secret",
    "needed_digest",
    "pickle_function",
    "refusal",
    "require_secret",
    "resolve_secret",
    "run_chunk",
    "secret_for",
    "with_function",
]

#: The function name under which every worker runs map chunks.
MAP_FUNCTION = "__map__"

#: How to turn shipping security on, for every error that asks for a secret.
NO_SECRET_HELP = (
    "set the same PALM_SECRET on the client and on every worker (or pass secret=); "
    "LocalCluster and `palm up` make one for the processes they start"
)

_TAG = 32
_NONCE = 16
_DIGEST = 16
_HEAD = _TAG + _NONCE + _DIGEST + 4  # a chunk's fixed head: tag, nonce, digest, len(fn)
_CHUNK = b"palm-chunk\0"
_ANSWER = b"palm-answer\0"
_REFUSED = b"palm-refused\0"
_DEP_MARK = b"\x8c\x03dep"  # how pickle writes the short string "dep"
_NEED_MARK = b"\x8c\x04need"  # and "need"

log = logging.getLogger("palm.shipping")


# secrets -----------------------------------------------------------------------


def resolve_secret(secret: bytes | str | None = None) -> bytes | None:
    """The cluster secret: the argument, else ``PALM_SECRET``, else None."""
    if secret is None:
        secret = os.environ.get("PALM_SECRET") or None
    if secret is None:
        return None
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine (tcp://127.x, localhost, ipc, inproc)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if ";" in host:  # tcp://source;destination: both must be local
        return all(is_loopback(f"tcp://{part}:0") for part in host.split(";"))
    return host.startswith("127.") or host in ("localhost", "::1")


def local_secret(path: Path | None = None) -> bytes:
    """This user's secret for processes on this machine, made on first use.

    A random key in ``$XDG_DATA_HOME/palm/local-secret`` (default
    ``~/.local/share``), readable by its owner only, so a client and the
    workers one user starts on one machine share a secret with no configuration
    while other users cannot read it.
    """
    if path is None:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        path = Path(base) / "palm" / "local-secret"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(f"{path} must belong to you and be readable by you only (chmod 600)")
    for _ in range(50):  # another process may be writing it right now
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.01)
    raise ConfigError(f"{path} is empty: delete it and try again")


def secret_for(secret: bytes | str | None, endpoints: Iterable[str | None]) -> bytes | None:
    """The secret to ship with: explicit or ``PALM_SECRET``; else, when every
    endpoint is on loopback, this user's :func:`local_secret`; else None."""
    resolved = resolve_secret(secret)
    if resolved is not None:
        return resolved
    known = [e for e in endpoints if e]
    if known and all(is_loopback(e) for e in known):
        return local_secret()
    return None


def require_secret(secret: bytes | None, endpoints: Iterable[str | None]) -> bytes:
    """``secret``, or a :class:`ConfigError` saying how to turn security on.

    Checked before any connection is made: without a secret, functions are
    never shipped to a peer off this machine.
    """
    if secret is not None:
        return secret
    remote = sorted({e for e in endpoints if e and not is_loopback(e)})
    where = f" to {', '.join(remote)}" if remote else ""
    raise ConfigError(
        f"map ships pickled functions{where} and refuses to without a cluster secret: "
        + NO_SECRET_HELP
    )


# chunks (client -> worker) -----------------------------------------------------


def _mac(secret: bytes, *parts: bytes) -> bytes:
    mac = _keyed(secret).copy()  # copying a keyed state beats keying anew per chunk
    mac.update(b"".join(parts))
    return mac.digest()


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def pickle_function(fn: Callable[[Any], Any]) -> tuple[bytes, bytes]:
    """``(digest, bytes)`` of a function: its dependency spec, then its cloudpickle.

    The same function object asked again gets the same bytes without pickling
    anew while nothing cloudpickle would read from it has changed
    (:class:`~palm.wire.fncache.FunctionCache`).
    """
    if isinstance(fn, str):
        raise ConfigError("map takes a Python callable, not source text")
    if not callable(fn):
        raise ConfigError(f"map takes a callable, got {type(fn).__name__}")
    return _PICKLED.get(fn, _pack)  # type: ignore[no-any-return]


def _pack(fn: Callable[[Any], Any]) -> tuple[tuple[bytes, bytes], tuple[str, ...]]:
    spec, data = deps.pack(fn)
    return (hashlib.sha256(data).digest()[:_DIGEST], data), spec.local


#: the functions ``map`` pickled, kept while nothing they would pickle changes
_PICKLED = FunctionCache()


def encode_chunk(secret: bytes, digest: bytes, fn_bytes: bytes, items: list[Any] | range) -> bytes:
    """A chunk, tagged with ``secret`` and made unique by a random nonce.

    Laid out as ``tag | nonce | digest | len(fn) | fn | items``. The tag covers
    the nonce, the function's digest and the items; the function's bytes are
    bound by their digest (checked by a worker before it unpickles them), so
    signing a chunk does not hash the function again for every chunk.
    """
    if len(digest) != _DIGEST:
        raise ConfigError(f"a function digest is {_DIGEST} bytes (pickle_function makes it)")
    try:
        body = pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        body = cloudpickle.dumps(items)
    nonce = os.urandom(_NONCE)
    tag = _mac(secret, _CHUNK, nonce, digest, body)
    return b"".join((tag, nonce, digest, len(fn_bytes).to_bytes(4, "big"), fn_bytes, body))


def chunk_digest(chunk: bytes) -> bytes:
    """The digest of the function a chunk runs."""
    return chunk[_TAG + _NONCE : _TAG + _NONCE + _DIGEST]


def is_lean(chunk: bytes) -> bool:
    """Whether ``chunk`` names its function by digest only (no function bytes)."""
    return len(chunk) >= _HEAD and chunk[_HEAD - 4 : _HEAD] == b"\0\0\0\0"


def with_function(chunk: bytes, fn_bytes: bytes) -> bytes:
    """A lean chunk made full: the same tag, nonce, digest and items, with ``fn_bytes``.

    The tag does not cover the function's bytes (the signed digest binds them),
    so the full chunk is as authentic as the lean one and its answer binds to
    the same tag. A chunk that is not lean is returned as it is.
    """
    if not is_lean(chunk):
        return chunk
    head = chunk[: _HEAD - 4]
    return b"".join((head, len(fn_bytes).to_bytes(4, "big"), fn_bytes, chunk[_HEAD:]))


#: Runs a chunk whose spec this environment lacks, elsewhere: its answer, or the
#: text of why it could not (an installer's message).
Elsewhere = Callable[[deps.Spec, bytes], "bytes | str"]


class _Unrunnable:
    """A function this worker checked and cannot run (kept by digest)."""

    def __init__(self, problem: deps.Problem, spec: deps.Spec) -> None:
        self.problem = problem
        self.spec = spec


def run_chunk(
    payload: bytes,
    secret: bytes | None,
    functions: dict[bytes, Any],
    *,
    worker: str = "",
    elsewhere: Elsewhere | None = None,
    report: list[tuple[str, bool]] | None = None,
) -> bytes:
    """Run one chunk on a worker and return its tagged answer; never raises.

    A function whose dependency spec this environment does not meet is not
    unpickled: ``elsewhere`` runs the chunk (in an environment built for the
    spec) when given, else the answer names the missing package. ``report``
    gets ``(the function's name, whether every item succeeded)`` of a chunk that
    was run here, for the counters (``("", True)`` for a lean chunk whose
    function this worker asks for).
    """
    if secret is None:
        return _refuse(f"this worker has no cluster secret: {NO_SECRET_HELP}")
    view = memoryview(payload)
    tag = payload[:_TAG]
    digest = payload[_TAG + _NONCE : _TAG + _NONCE + _DIGEST]
    fn_end = _HEAD + int.from_bytes(view[_HEAD - 4 : _HEAD], "big")
    body = payload[fn_end:]
    if (
        len(payload) < _HEAD
        or fn_end > len(payload)
        or not hmac.compare_digest(
            tag, _mac(secret, _CHUNK, payload[_TAG : _TAG + _NONCE], digest, body)
        )
    ):
        return _refuse("chunk signature does not match this worker's cluster secret")
    fn: Any = functions.get(digest)
    if fn is None:
        fn_bytes = payload[_HEAD:fn_end]
        if not fn_bytes:  # a lean chunk for a function this worker does not hold
            if report is not None:
                report.append(("", True))  # nothing failed: it comes back with the function
            return _answer(secret, tag, pickle.dumps(("need", digest)))
        if not hmac.compare_digest(hashlib.sha256(fn_bytes).digest()[:_DIGEST], digest):
            return _refuse("the chunk's function does not match its signed digest")
        try:
            spec, fn_bytes = deps.unpack(fn_bytes)
        except ConfigError as exc:
            return _answer(secret, tag, _error(-1, "palm.ConfigError", str(exc)))
        problem = deps.check(spec)
        if problem is not None:
            fn = _Unrunnable(problem, spec)
            functions[digest] = fn
    if type(fn) is _Unrunnable:
        if elsewhere is None:
            return _answer(secret, tag, _dependency(fn.problem, worker))
        outcome = elsewhere(fn.spec, payload)
        if isinstance(outcome, bytes):
            return outcome
        return _answer(secret, tag, _dependency(fn.problem, worker, outcome))
    try:
        if fn is None:
            fn = cloudpickle.loads(fn_bytes)
            if len(functions) > 64:
                functions.clear()
            functions[digest] = fn
        items = pickle.loads(body)
    except Exception as exc:
        return _answer(secret, tag, _error(-1, type(exc).__qualname__, f"cannot unpickle: {exc}"))
    if type(items) is not list and type(items) is not range:
        return _answer(secret, tag, _error(-1, "TypeError", "a chunk's items are not a list"))
    body, ok = _run(fn, items)
    if report is not None:
        report.append((str(getattr(fn, "__qualname__", None) or type(fn).__qualname__), ok))
    return _answer(secret, tag, body)


def _run(fn: Callable[[Any], Any], items: list[Any] | range) -> tuple[bytes, bool]:
    """The chunk's answer body, and whether every item succeeded."""
    start = time.perf_counter()
    results: list[Any] = []
    try:
        # in C, each item once; extend keeps what came before a failing item,
        # so the failing item's index is how many results there are
        results.extend(map(fn, items))
    except Exception as exc:
        return _error(len(results), _type_name(exc), str(exc), traceback.format_exc()), False
    elapsed = time.perf_counter() - start
    try:
        data: bytes = pickle.dumps(("ok", results, elapsed), protocol=pickle.HIGHEST_PROTOCOL)
        return data, True
    except Exception:
        try:
            fallback: bytes = cloudpickle.dumps(("ok", results, elapsed))
            return fallback, True
        except Exception as exc:
            return _error(-1, _type_name(exc), f"cannot pickle the results: {exc}"), False


def _type_name(exc: BaseException) -> str:
    klass = type(exc)
    return (
        klass.__qualname__
        if klass.__module__ == "builtins"
        else f"{klass.__module__}.{klass.__qualname__}"
    )


def _error(index: int, type_: str, message: str, tb: str = "") -> bytes:
    return pickle.dumps(("err", index, type_, message, tb))


def _dependency(problem: deps.Problem, worker: str, detail: str = "") -> bytes:
    fields = (problem.package, problem.wanted, problem.found, deps.this_host(), worker, detail)
    return pickle.dumps(("dep", *fields))


def _answer(secret: bytes, chunk_tag: bytes, body: bytes) -> bytes:
    return _mac(secret, _ANSWER, chunk_tag, body) + body


def _refuse(message: str) -> bytes:
    return _REFUSED + message.encode()


# answers (worker -> client) ----------------------------------------------------


def refusal(answer: bytes) -> str | None:
    """The text of a worker's refusal (unauthenticated, never unpickled), else None."""
    if not answer.startswith(_REFUSED):
        return None
    # unauthenticated text for logs and errors: printable ASCII, short
    text = answer[len(_REFUSED) : len(_REFUSED) + 300].decode("ascii", errors="replace")
    return "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)


def needed_digest(answer: bytes) -> bytes | None:
    """The digest an (authenticated) answer asks the function bytes of, else None."""
    if _NEED_MARK not in answer[_TAG : _TAG + 24]:  # after the pickle's protocol and frame
        return None
    try:
        body = pickle.loads(answer[_TAG:])
    except Exception:
        return None
    if type(body) is tuple and len(body) == 2 and body[0] == "need" and type(body[1]) is bytes:
        return body[1]
    return None


def authentic(secret: bytes, chunk: bytes, answer: bytes) -> bool:
    """Whether ``answer`` carries a valid tag for ``chunk`` under ``secret``."""
    tag, body = answer[:_TAG], answer[_TAG:]
    if len(tag) != _TAG:
        return False
    return hmac.compare_digest(tag, _mac(secret, _ANSWER, chunk[:_TAG], body))


def decode_answer(
    payload: bytes,
    first_index: int,
    function: str,
    *,
    secret: bytes,
    chunk: bytes,
    verified: bool = False,
) -> tuple[list[Any], float]:
    """A chunk's results and the seconds its worker spent, or its error raised.

    ``payload`` must answer ``chunk`` with a tag made with ``secret``; anything
    else raises :class:`ProtocolError` without being unpickled. ``verified``:
    the caller has just checked that itself (:func:`authentic`).
    """
    if not verified and not authentic(secret, chunk, payload):
        said = refusal(payload)
        raise ProtocolError(
            "map answer failed authentication and was not unpickled"
            + (f": the worker refused the chunk: {said}" if said is not None else "")
        )
    try:
        answer = pickle.loads(payload[_TAG:])
    except Exception as exc:
        raise ProtocolError(f"map answer does not unpickle: {exc}") from exc
    if type(answer) is not tuple or not answer:
        raise ProtocolError("a map answer is not a tuple")
    if answer[0] == "dep":
        raise _dependency_error(answer, function)
    if answer[0] == "need":
        raise ProtocolError("a worker asked for the function's bytes of a chunk that had them")
    if answer[0] == "ok":
        if len(answer) != 3 or type(answer[1]) is not list:
            raise ProtocolError("a map answer's results are not a list")
        if type(answer[2]) not in (int, float):
            raise ProtocolError("a map answer's time is not a number")
        return answer[1], float(answer[2])
    if len(answer) != 5 or answer[0] != "err":
        raise ProtocolError("a map answer is neither results nor an error")
    _, index, type_, message, tb = answer
    if not (type(index) is int and type(type_) is str and type(message) is str and type(tb) is str):
        raise ProtocolError("a map error answer has fields of the wrong type")
    raise RemoteError(
        type_,
        message,
        tb,
        function=function,
        index=None if index < 0 else first_index + index,
    )


def _dependency_error(answer: tuple[Any, ...], function: str) -> DependencyError:
    if len(answer) != 7 or not all(
        type(f) is str or (i == 3 and f is None) for i, f in enumerate(answer)
    ):
        raise ProtocolError("a map dependency answer has fields of the wrong type")
    _, package, wanted, found, host, worker, detail = answer
    return DependencyError.about(
        package, wanted, found, host=host, worker=worker, detail=detail, function=function
    )


class RejectCounter:
    """Answers dropped for failing authentication: counted, logged once per burst.

    A burst is every rejection within ``quiet_s`` of the last log line; the
    next line after it reports how many were dropped since.
    """

    def __init__(self, where: str, quiet_s: float = 10.0) -> None:
        self.where = where
        self.quiet_s = quiet_s
        #: every answer dropped so far
        self.count = 0
        #: the last refusal a worker sent (unauthenticated text), if any
        self.last_refusal: str | None = None
        self._logged_at: float | None = None
        self._unlogged = 0

    def record(self, answer: bytes) -> None:
        self.count += 1
        self._unlogged += 1
        said = refusal(answer)
        if said is not None:
            self.last_refusal = said
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= self.quiet_s:
            log.warning(
                "%s: dropped %d map answer(s) that failed authentication "
                "(a rogue worker, or a worker with another secret)%s",
                self.where,
                self._unlogged,
                f"; a worker said: {said}" if said is not None else "",
            )
            self._logged_at = now
            self._unlogged = 0

    def explain(self) -> str:
        """What the rejections were, for the error a caller gets."""
        text = f"{self.count} map answer(s) failed authentication and were dropped"
        if self.last_refusal is not None:
            text += f"; a worker refused the chunks: {self.last_refusal}"
        return f"{text} ({NO_SECRET_HELP})"

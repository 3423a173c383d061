"""A function's shipped form is pickled once and kept only while nothing it captures changes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import cloudpickle

from palm.wire import deps
from palm.wire import shipping as mapping
from palm.wire.fncache import FunctionCache, snapshot

FACTOR = 3
SETTINGS = {"factor": 3}


def scaled(x: int) -> int:
    return x * FACTOR


def configured(x: int) -> int:
    return x * SETTINGS["factor"]


def helper(x: int) -> int:
    return x + 1


def calls_helper(x: int) -> int:
    return helper(x) * 2


def uses_math(x: float) -> float:
    return math.sqrt(x)


def with_default(x: int, k: int = 2) -> int:
    return x * k


def counting() -> tuple[FunctionCache, Callable[[Any], Any]]:
    cache = FunctionCache()

    def pack(fn: Any) -> tuple[Any, tuple[str, ...]]:
        spec, data = deps.pack(fn)
        return data, spec.local

    return cache, lambda fn: cache.get(fn, pack)


def run(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """What a worker computes with the bytes the client would ship now."""
    digest, data = mapping.pickle_function(fn)
    chunk = mapping.encode_chunk(b"s", digest, data, items)
    answer = mapping.run_chunk(chunk, b"s", {})
    return mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=chunk)[0]


def test_the_same_function_is_pickled_once() -> None:
    cache, pickled = counting()
    first = pickled(helper)
    for _ in range(5):
        assert pickled(helper) == first
    assert cache.misses <= 2  # the first pack may import modules (the key changes once)
    assert cache.hits >= 4


def test_a_changed_global_is_shipped_as_it_is_now() -> None:
    global FACTOR
    assert run(scaled, [1, 2]) == [3, 6]
    FACTOR = 5
    try:
        assert run(scaled, [1, 2]) == [5, 10]
    finally:
        FACTOR = 3
    assert run(scaled, [1]) == [3]


def test_a_mutable_global_is_never_cached() -> None:
    cache, pickled = counting()
    assert snapshot(configured) is None
    pickled(configured)
    pickled(configured)
    assert cache.hits == 0
    SETTINGS["factor"] = 7
    try:
        assert run(configured, [1]) == [7]
    finally:
        SETTINGS["factor"] = 3
    assert run(configured, [1]) == [3]


def test_a_changed_helper_function_is_seen() -> None:
    global helper
    original = helper
    assert run(calls_helper, [1]) == [4]
    helper = lambda x: x + 10  # noqa: E731
    try:
        assert run(calls_helper, [1]) == [22]
    finally:
        helper = original
    assert run(calls_helper, [1]) == [4]


def test_changed_defaults_and_closures_are_seen() -> None:
    assert run(with_default, [3]) == [6]
    with_default.__defaults__ = (10,)
    try:
        assert run(with_default, [3]) == [30]
    finally:
        with_default.__defaults__ = (2,)

    step = 1

    def closure(x: int) -> int:
        return x + step

    assert run(closure, [1]) == [2]
    step = 100
    assert run(closure, [1]) == [101]


def test_a_global_that_shadows_a_builtin_is_seen() -> None:
    def absolute(x: int) -> int:
        return abs(x)

    assert run(absolute, [-2]) == [2]
    globals()["abs"] = lambda x: 0
    try:
        assert run(absolute, [-2]) == [0]
    finally:
        del globals()["abs"]
    assert run(absolute, [-2]) == [2]


def test_modules_and_importable_functions_are_kept_by_reference() -> None:
    taken = snapshot(uses_math, ())
    assert taken is not None and math in taken
    # shipped by value (a user's registration): walked, and a dict there refuses
    cloudpickle.register_pickle_by_value(deps)
    try:
        assert snapshot(lambda x: deps.FRAMEWORK, ()) is None
    finally:
        cloudpickle.unregister_pickle_by_value(deps)


def test_other_callables_are_pickled_every_time() -> None:
    cache, pickled = counting()
    pickled(len)
    pickled(len)
    assert cache.hits == 0 and cache.misses == 2


def countdown(n: int) -> int:
    return 0 if n <= 0 else countdown(n - 1)


def test_recursive_functions_are_cached_and_a_cached_function_is_not_kept_alive() -> None:
    import gc
    import weakref

    cache, pickled = counting()
    pickled(countdown)
    pickled(countdown)
    pickled(countdown)
    assert cache.hits >= 1
    walked = snapshot(countdown, (countdown.__module__.partition(".")[0],))  # shipped by value
    assert walked is not None and not any(part is countdown for part in walked)

    def local(x: int) -> int:
        return x

    pickled(local)
    pickled(local)
    gone = weakref.ref(local)
    del local
    gc.collect()
    assert gone() is None


def test_objects_that_cannot_be_looked_at_are_not_cached() -> None:
    deep: Any = ()
    for _ in range(100_000):
        deep = (deep,)
    holder = {"deep": deep}

    def nested(x: int) -> Any:
        return holder

    assert snapshot(nested) is None  # a dict in its closure
    globals()["DEEP"] = deep
    try:
        assert snapshot(lambda x: DEEP) is None  # noqa: F821  too deep to walk
    finally:
        del globals()["DEEP"]

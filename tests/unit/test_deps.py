"""Dependency specs of shipped functions: discovery, checking, and what a worker answers."""

from __future__ import annotations

import functools
import hashlib
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml

from palm.cli import main as palm_main
from palm.errors import ConfigError, DependencyError, RemoteError
from palm.ops.environments import Environments
from palm.wire import deps
from palm.wire import shipping as mapping
from palm.wire.vetting import DependencyRetry, dependency_refusal

MSGPACK = metadata.version("msgpack")
YAML = metadata.version("PyYAML")


def imports_inside(x: int) -> int:
    import msgpack as inner

    return len(inner.packb(x))


def uses_a_module_global(x: int) -> str:
    return str(yaml.safe_dump(x))


def calls_a_helper(x: int) -> int:
    return imports_inside(x) + 1


def make_closure() -> Any:
    packer = msgpack

    def inner(x: int) -> int:
        return len(packer.packb(x))

    return inner


class Packer:
    def __call__(self, x: int) -> bytes:
        return bytes(msgpack.packb(x))


def stdlib_only(x: int) -> str:
    return os.path.join(str(x), hashlib.sha1(b"x").hexdigest())


@pytest.mark.parametrize(
    "fn",
    [
        imports_inside,
        calls_a_helper,
        make_closure(),
        functools.partial(calls_a_helper),
        Packer(),
        lambda x: imports_inside(x),
    ],
    ids=["import", "helper", "closure", "partial", "instance", "lambda"],
)
def test_discovery_finds_msgpack_however_it_is_reached(fn: Any) -> None:
    spec = deps.discover(fn)
    assert spec.packages == {"msgpack": MSGPACK}


def test_module_globals_are_found_and_the_standard_library_and_palm_are_not() -> None:
    assert deps.discover(uses_a_module_global).packages == {"PyYAML": YAML}
    assert deps.discover(stdlib_only).packages == {}
    assert deps.discover(mapping.encode_chunk).packages == {}  # palm's own: never asked for


def test_a_spec_round_trips_and_its_hash_depends_on_the_pins_only() -> None:
    spec = deps.Spec({"b": "2", "a": "1"}, ("mine",))
    again = deps.Spec.from_json(spec.to_json())
    assert again == spec and again.hash == spec.hash
    assert deps.Spec({"a": "1", "b": "2"}).hash == spec.hash
    assert deps.Spec({"a": "1", "b": "3"}).hash != spec.hash
    assert spec.requirements() == ["a==1", "b==2"]
    for bad in (b"{", b"[]", b'{"packages": {"a": 1}}', b'{"packages": {}, "local": [3]}'):
        with pytest.raises(ConfigError):
            deps.Spec.from_json(bad)


def test_checking_names_a_missing_package_and_a_mismatched_one() -> None:
    assert deps.check(deps.Spec({"msgpack": MSGPACK})) is None
    assert deps.check(deps.Spec({"no-such-dist-palm": "1.0"})) == deps.Problem(
        "no-such-dist-palm", "1.0", None
    )
    assert deps.check(deps.Spec({"msgpack": "0.0.1"})) == deps.Problem("msgpack", "0.0.1", MSGPACK)
    here = deps.Spec().python
    assert deps.check(deps.Spec({}, python="2.7")) == deps.Problem("python", "2.7", here)


def chunk_needing(packages: dict[str, str], pickled: bytes = b"not a pickle") -> bytes:
    head = deps.Spec(packages).to_json()
    section = len(head).to_bytes(4, "big") + head + pickled
    digest = hashlib.sha256(section).digest()[:16]
    return mapping.encode_chunk(b"s", digest, section, [1, 2])


def test_a_worker_lacking_a_package_answers_a_dependency_error_without_unpickling() -> None:
    payload = chunk_needing({"msgpack": "0.0.1"})  # the function bytes do not even unpickle
    answer = mapping.run_chunk(payload, b"s", {}, worker="w7")
    assert dependency_refusal(answer)
    with pytest.raises(DependencyError) as caught:
        mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=payload)
    error = caught.value
    assert isinstance(error, RemoteError)
    assert (error.package, error.wanted, error.found) == ("msgpack", "0.0.1", MSGPACK)
    assert (error.worker, error.host) == ("w7", deps.this_host())


def test_a_worker_checks_a_function_once_not_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = deps.check
    monkeypatch.setattr(deps, "check", lambda spec: calls.append(spec) or real(spec))
    digest, fn = mapping.pickle_function(imports_inside)
    functions: dict[bytes, Any] = {}
    for _ in range(3):
        payload = mapping.encode_chunk(b"s", digest, fn, [1, 2])
        answer = mapping.run_chunk(payload, b"s", functions)
        assert mapping.decode_answer(answer, 0, "f", secret=b"s", chunk=payload)[0] == [1, 1]
    assert len(calls) == 1


def test_elsewhere_runs_what_this_environment_cannot_or_says_why() -> None:
    payload = chunk_needing({"msgpack": "0.0.1"})
    seen: list[deps.Spec] = []

    def built(spec: deps.Spec, chunk: bytes) -> bytes:
        seen.append(spec)
        return b"the answer from the environment"

    answer = mapping.run_chunk(payload, b"s", {}, elsewhere=built)
    assert answer == b"the answer from the environment"
    assert seen == [deps.Spec({"msgpack": "0.0.1"})]
    failed = mapping.run_chunk(payload, b"s", {}, elsewhere=lambda s, c: "pip said no")
    with pytest.raises(DependencyError, match="pip said no") as caught:
        mapping.decode_answer(failed, 0, "f", secret=b"s", chunk=payload)
    assert caught.value.detail == "pip said no"


def test_a_refused_chunk_is_retried_a_few_times_then_its_error_is_the_answer() -> None:
    payload = chunk_needing({"msgpack": "0.0.1"})
    refused = mapping.run_chunk(payload, b"s", {})
    forged: list[bytes] = []
    vet = DependencyRetry(b"s", 2, forged.append)
    for _ in range(2):
        assert not vet.check(payload, refused)
        vet.on_reject(refused)
    assert vet.check(payload, refused)  # the third time: the DependencyError goes to the caller
    assert forged == []  # refusals are not counted as forgeries...
    assert not vet.check(payload, b"x" * 40)
    vet.on_reject(b"x" * 40)
    assert forged == [b"x" * 40]  # ...and forgeries still are


def test_environments_beyond_the_bound_lose_the_least_recently_used(tmp_path: Path) -> None:
    envs = Environments(tmp_path, max_envs=2)
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".palm-ready").write_text("{}")
        (tmp_path / name / ".palm-used").touch()
        os.utime(tmp_path / name / ".palm-used", (now - 100 * age, now - 100 * age))
    envs._evict(keep="newest")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["middle", "newest"]


def test_palm_deps_prints_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert palm_main(["deps", "tests.unit.test_deps:calls_a_helper"]) == 0
    out = capsys.readouterr().out
    assert f"msgpack=={MSGPACK}" in out and "shipped by value" in out


def test_palm_worker_hands_its_dependency_options_to_every_worker_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from palm.cli import build_parser
    from palm.ops.worker_process import argument_parser
    from palm.workers.command import deps_environment

    options = ["--install-deps", "--find-links", "/wheels", "--no-index", "--deps-cache", "/envs"]
    args = build_parser().parse_args(["worker", "m:W", "--connect", "tcp://127.0.0.1:9", *options])
    for key, value in deps_environment(args).items():
        monkeypatch.setenv(key, value)
    child = argument_parser().parse_args(["m:W", "w1"])
    assert child.install_deps and child.no_index
    assert (child.find_links, child.deps_cache) == (["/wheels"], "/envs")
    monkeypatch.setenv("PALM_INSTALL_DEPS", "0")
    assert not argument_parser().parse_args(["m:W", "w1"]).install_deps


class Holder:
    def __init__(self) -> None:
        self.packer = msgpack

    def pack(self, x: int) -> bytes:
        return bytes(self.packer.packb(x))


class Exotic:
    """An object whose attributes raise anything but AttributeError."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(name)


def test_bound_methods_bring_their_instance_and_odd_objects_do_not_stop_discovery() -> None:
    assert deps.discover(Holder().pack).packages == {"msgpack": MSGPACK}
    odd = Exotic()
    huge = {i: i for i in range(100_000)}

    def uses_both(x: int) -> Any:
        return (odd, huge, msgpack)

    assert deps.discover(uses_both).packages == {"msgpack": MSGPACK}


def test_a_service_in_palm_yaml_turns_environments_on_demand_on_for_its_workers() -> None:
    from palm.ops.config import parse_deployment

    def service(install_deps: Any) -> Any:
        raw = {
            "services": {
                "maths": {
                    "kind": "function",
                    "functions": {"f": "m:f"},
                    "install_deps": install_deps,
                }
            }
        }
        return parse_deployment(raw).services["maths"]

    assert service(None).deps_arguments == ()
    assert service(True).deps_arguments == ("--install-deps",)
    options = {"find_links": ["./wheels"], "no_index": True, "cache": "/envs", "max_envs": 3}
    assert service(options).deps_arguments == (
        "--install-deps",
        "--find-links",
        "./wheels",
        "--deps-cache",
        "/envs",
        "--no-index",
        "--deps-max-envs",
        "3",
    )
    for bad, message in (
        ({"find_links": "w"}, "list"),
        ({"pip": 1}, "unknown"),
        ("yes", "mapping"),
    ):
        with pytest.raises(ConfigError, match=message):
            service(bad)

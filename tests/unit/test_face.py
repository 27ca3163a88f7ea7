"""The async face (`azure.AsyncContainer`): every blocking call it makes runs in a
worker thread holding a token of its one limiter, and `Remote` leaves nothing of
`RemoteContainer` to the protocol's defaults."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from blobmount.azure import AsyncContainer, BlobItem, Remote, RemoteContainer
from blobmount.threads import Threads

TIMEOUT = 10
ITEM = BlobItem("b", False, 1, 1, "e")

#: Each async method of the face, and the arguments a call of it is given.
CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "check": ((), {}),
    "list_pages": (("p/",), {}),
    "list_tree": (("p/", 10), {}),
    "list_files": (("p/",), {}),
    "list_all": (("p/",), {}),
    "properties": (("b",), {}),
    "head": (("b",), {}),
    "update_metadata": (("b", {"k": "v"}), {}),
    "tags": (("b",), {}),
    "update_tags": (("b", {"k": "v"}), {}),
    "download": (("b", Path("/nonexistent")), {"size": 1}),
    "read_blocks": (("b", -1, 0, 1, "e", 1), {}),
    "read_small": (("b",), {}),
    "upload": (("b", Path("/nonexistent")), {"base_etag": "", "md5": "00"}),
    "put_small": (("b", b"x", {}), {}),
    "make_folder": (("p/",), {}),
    "delete": (("b",), {}),
    "copy": (("a", "b"), {}),
    "snapshot": (("b", "e"), {}),
    "delete_snapshot": (("b", "s"), {}),
    "snapshot_source": (("b", "s"), {}),
    "stage_block": (("b", "id", b"x"), {}),
    "stage_block_from_url": (("b", "id", "https://x", 0, 1, "e"), {}),
    "block_list": (("b",), {}),
    "commit_block_names": (("b", ["id"]), {"base_etag": "e", "content_type": None,
                                           "md5": None, "metadata": {}}),
    "azcopy_blob": (("b",), {"size": 1}),
    "azcopy_folder": (("p/",), {"size": 1}),
    "sas_for_azcopy": ((), {}),
    "run_sync": ((len, "abc"), {}),
}


class Watched(RemoteContainer):
    """A remote whose every method notes, as it runs, whether it runs in a worker
    thread and how many tokens of the limiter are lent out then."""

    label = "acct/cont"

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.seen: list[tuple[str, bool, int]] = []

    def note(self, name: str) -> None:
        in_worker = threading.current_thread() is not threading.main_thread()
        self.seen.append((name, in_worker, self.limiter.borrowed_tokens))

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        for page in ([ITEM], [ITEM]):
            self.note("list_pages")
            yield page

    def list_files(self, prefix: str) -> Iterator[BlobItem]:
        self.note("list_files")
        yield ITEM


def _noting(name: str) -> Callable[..., Any]:
    def method(self: Watched, *args: Any, **kwargs: Any) -> Any:
        self.note(name)

    return method


# Each blocking method the face calls, but the listings (above). A download goes by
# the protocol's download_async, which runs `download` in a worker thread.
for _name in set(CALLS) - {"run_sync", "list_pages", "list_files"}:
    setattr(Watched, _name, _noting(_name))


def _face_methods() -> set[str]:
    return {name for name, member in inspect.getmembers(AsyncContainer)
            if not name.startswith("_") and (inspect.iscoroutinefunction(member)
                                             or inspect.isasyncgenfunction(member))}


def test_the_table_covers_every_async_method_of_the_face() -> None:
    assert set(CALLS) == _face_methods()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_call_runs_in_a_thread_holding_a_token(name: str) -> None:
    threads = Threads(1)
    remote = Watched(threads.limiter)
    face = AsyncContainer(remote, threads)
    args, kwargs = CALLS[name]
    noted: list[int] = []

    async def main() -> None:
        call = getattr(face, name)
        if inspect.isasyncgenfunction(call):
            async for _ in call(*args, **kwargs):
                noted.append(threads.limiter.borrowed_tokens)  # between steps: none held
        else:
            assert await call(*args, **kwargs) == (3 if name == "run_sync" else None)

    trio.run(main)
    if name == "run_sync":
        return  # len noted nothing: the next test holds run_sync to the limiter
    assert remote.seen, f"{name} reached no blocking method"
    assert all(in_worker and tokens == 1 for _, in_worker, tokens in remote.seen), remote.seen
    assert all(tokens == 0 for tokens in noted)
    if name == "list_pages":
        assert len(remote.seen) == 2  # each page fetched under the limiter


def test_a_second_call_waits_for_the_token_the_first_holds() -> None:
    threads = Threads(1)
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def blocking(name: str) -> str:
        order.append(f"{name} in")
        if name == "first":
            entered.set()
            assert release.wait(TIMEOUT)
        return name

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            await both()

    async def both() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(threads.run_sync, blocking, "first")
            # The test's own wait, in a thread of trio's default limiter.
            assert await trio.to_thread.run_sync(entered.wait, TIMEOUT)
            nursery.start_soon(threads.run_sync, blocking, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert order == ["first in"]
            assert threads.limiter.statistics().tasks_waiting == 1
            release.set()
        assert order == ["first in", "second in"]

    trio.run(main)


def test_a_fake_that_lacks_a_method_says_which() -> None:
    with pytest.raises(NotImplementedError, match="^Watched has no set_tier$"):
        Watched(trio.CapacityLimiter(1)).set_tier("b", "Hot")


def test_remote_leaves_nothing_to_the_protocols_defaults() -> None:
    """The protocol's defaults raise, for fakes; the real Remote defines each itself."""
    members = {name for name in vars(RemoteContainer)
               if not name.startswith("_") and name != "download_async"}
    defaults = {name for name in members if getattr(Remote, name) is vars(RemoteContainer)[name]}
    assert members and not defaults, f"Remote lacks {sorted(defaults)}"

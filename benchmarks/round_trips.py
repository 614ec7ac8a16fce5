"""Database round trips, counted on the wire: a TCP relay between the tool and PostgreSQL.

A round trip is a turn of the conversation: the client speaks (one or more packets: a query, a
pipeline of queries, BEGIN, COMMIT, a pool's pre-ping, a login step), then waits for the server to
answer. The relay counts each time the client speaks after the server has (or first on a
connection), so it sees every connection of every process the tool forks (workers, the
coordination session, the scan-ahead helper), pre-pings and connection set-up included, and a
pipeline of statements sent before reading counts as one. It adds latency, so it serves only the
benchmark's counting runs, never the timed ones.

    with RoundTripCounter("127.0.0.1", 5432) as relay:
        url = url.set(host="127.0.0.1", port=relay.port)
        ...  # run the tool against url
    relay.round_trips
"""
from __future__ import annotations

import asyncio
import threading
from types import TracebackType

_CHUNK = 1 << 16
_STOP_SECONDS = 10.0
"""How long the relay waits for its thread when the benchmark leaves the ``with`` block."""


class RoundTripCounter:
    """A relay listening on 127.0.0.1 (``port``) that forwards to ``host``:``upstream_port`` and
    counts round trips over every connection it carries (``round_trips``)."""

    def __init__(self, host: str, upstream_port: int) -> None:
        self._host, self._upstream_port = host, upstream_port
        self._count = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, name="round-trip-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def round_trips(self) -> int:
        with self._lock:
            return self._count

    def __enter__(self) -> RoundTripCounter:
        self._thread.start()
        if not self._ready.wait(_STOP_SECONDS) or not self.port:
            raise RuntimeError("the round-trip relay did not start listening")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_SECONDS)

    def _serve_forever(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(self._host, self._upstream_port)
        turn = _Turn()
        await asyncio.gather(self._pump(client_reader, server_writer, turn, from_client=True),
                             self._pump(server_reader, client_writer, turn, from_client=False))

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, turn: _Turn, *,
                    from_client: bool) -> None:
        try:
            while data := await source.read(_CHUNK):
                if from_client and not turn.client_speaking:
                    with self._lock:
                        self._count += 1
                turn.client_speaking = from_client
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


class _Turn:
    """Who spoke last on one connection (mutable, shared by its two pumps on one event loop)."""

    def __init__(self) -> None:
        self.client_speaking = False

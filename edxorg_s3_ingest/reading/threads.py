"""Stages of a load that overlap, each on a thread of its own, with bounded queues between."""

import queue
import threading
from collections.abc import Iterator

READ_AHEAD = 1
"""Items a thread may hold ready beyond the one its consumer works on: bounds the memory."""

_END = object()


def read_ahead(items: Iterator, name: str, depth: int = READ_AHEAD) -> Iterator:
    """`items`, produced on a thread of their own at most `depth` items ahead of the consumer.

    An exception in the producer is raised in the consumer, at the point it was reached; closing
    the consumer (dlt stopping the extraction) stops the producer before returning.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put((_END, error))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()

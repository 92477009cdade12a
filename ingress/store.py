"""Group commit: the messages of concurrent sessions stored in shared transactions.

Each session's DATA waits on a future; one thread takes every message waiting
(up to ``max_batch``), stores them in one transaction (ingress.decisions.
accept_messages) and answers each session once that transaction committed.
While it commits, the next group gathers, so under load a commit carries
many messages, and with a single session it costs no more than before.

Tasks for the stored deliveries are put on the queue by a second thread
after the sessions have their 250: a slow or absent broker never holds up
acceptance (the sweep re-sends what could not be enqueued).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid

from conduit import metrics
from ingress import decisions
from webhooks import accept as webhook_accept

logger = logging.getLogger("conduit.ingress")

MAX_BATCH = 64
# Under load (a pass within LINGER_AFTER of the last), a part-filled task
# waits up to LINGER for more deliveries; an idle ingress publishes at once.
LINGER = 0.010
LINGER_AFTER = 0.003
_STOP = object()


class GroupCommitter:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_batch: int = MAX_BATCH) -> None:
        self.loop = loop
        self.max_batch = max_batch
        self._pending: queue.SimpleQueue = queue.SimpleQueue()
        self._to_enqueue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._store_loop, name="ingress-store", daemon=True),
            threading.Thread(target=self._enqueue_loop, name="ingress-enqueue", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    async def store(self, message: decisions.MessageInput) -> str | None:
        """The reply for this message; None if it must be accepted on its own."""
        future = self.loop.create_future()
        self._pending.put((message, future))
        return await future

    def close(self) -> None:
        """Finish what was handed over, then stop both threads."""
        self._pending.put(_STOP)
        for thread in self._threads:
            thread.join(30)

    def _store_loop(self) -> None:
        stopping = False
        while not stopping:
            group = _take_waiting(self._pending, self.max_batch)
            if _STOP in group:
                group.remove(_STOP)
                stopping = True
            if group:
                self._store(group)
        self._to_enqueue.put(_STOP)

    def _store(self, group: list) -> None:
        metrics.smtp_group_committed(len(group))
        try:
            result = decisions.accept_messages([message for message, _ in group])
            replies = result.replies
        except Exception:
            logger.exception("Unexpected error while accepting %d messages", len(group))
            replies = [None] * len(group)
            error: BaseException | None = RuntimeError("storing failed")
        else:
            error = None
            if result.delivery_ids:
                self._to_enqueue.put(result.delivery_ids)
        futures = [future for _, future in group]
        try:
            self.loop.call_soon_threadsafe(_answer, futures, replies, error)
        except RuntimeError:  # the loop is gone: the process is exiting
            logger.warning("Could not answer %d sessions: the event loop has closed", len(group))

    def _enqueue_loop(self) -> None:
        last_pass = -LINGER_AFTER
        while True:
            # Everything waiting: one pass over the broker for all.
            batches = _take_waiting(self._to_enqueue)
            stopping = _STOP in batches
            ids: list[uuid.UUID] = [i for batch in batches if batch is not _STOP for i in batch]
            if not stopping and time.monotonic() - last_pass < LINGER_AFTER:
                stopping = self._fill_last_task(ids)
            if ids:
                try:
                    webhook_accept.publish(ids)
                except Exception:
                    logger.exception("Could not enqueue %d deliveries; the sweep will", len(ids))
                last_pass = time.monotonic()
            if stopping:
                return

    def _fill_last_task(self, ids: list[uuid.UUID]) -> bool:
        """Under load, wait up to LINGER for deliveries to fill the last task.

        A publish costs the same for one delivery as for a task's four, and
        while groups hold one or two messages most tasks would carry one or
        two. Returns whether the committer was closed meanwhile.
        """
        deadline = time.monotonic() + LINGER
        while len(ids) % webhook_accept.TASK_BATCH:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch = self._to_enqueue.get(timeout=left)
            except queue.Empty:
                break
            if batch is _STOP:
                return True
            ids.extend(batch)
        return False


def _take_waiting(waiting: queue.SimpleQueue, limit: int | None = None) -> list:
    """The next item (waiting for it), then whatever else is already queued."""
    items = [waiting.get()]
    while limit is None or len(items) < limit:
        try:
            items.append(waiting.get_nowait())
        except queue.Empty:
            break
    return items


def _answer(futures: list, replies: list, error: BaseException | None) -> None:
    for future, reply in zip(futures, replies, strict=True):
        if future.done():  # the session went away
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(reply)

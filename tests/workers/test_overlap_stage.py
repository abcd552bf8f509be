"""workers/overlap.BackgroundStage: one stage at a time, a hand-off waits for the previous stage,
a stage that raises does not stop the thread, drain waits for the last stage, and a stage past
its limit is reported overdue (its job ids) while it runs."""

from __future__ import annotations

import threading
import time

from workers.overlap import BackgroundStage


def test_one_stage_at_a_time_and_drain_waits_for_the_last() -> None:
    stage, release, order = BackgroundStage(), threading.Event(), []

    def held() -> None:
        order.append("held started")
        release.wait(10)
        order.append("held done")

    stage.submit(held)
    handed = threading.Event()

    def second_handoff() -> None:
        stage.submit(lambda: order.append("second"))
        handed.set()

    threading.Thread(target=second_handoff, daemon=True).start()
    assert not handed.wait(0.3)  # the second hand-off waits while the first stage runs
    assert not stage.drain(timeout_s=0.1)
    release.set()
    assert handed.wait(5) and stage.drain(timeout_s=5)
    assert order == ["held started", "held done", "second"]


def test_a_stage_that_raises_leaves_the_thread_working() -> None:
    stage, done = BackgroundStage(), []

    def broken() -> None:
        raise RuntimeError("boom")

    stage.submit(broken, ["video_x"])
    stage.submit(lambda: done.append(time.monotonic()))
    assert stage.drain(timeout_s=5) and len(done) == 1


def test_an_interrupted_handoff_leaves_the_slot_free() -> None:
    stage = BackgroundStage()
    stage._queue.put = lambda item: (_ for _ in ()).throw(KeyboardInterrupt())  # as a signal landing mid-submit
    try:
        stage.submit(lambda: None)
    except KeyboardInterrupt:
        pass
    assert stage.drain(timeout_s=0.5)  # not held by the stage that never ran


def test_a_stage_past_its_limit_is_overdue_while_it_runs() -> None:
    stage, release = BackgroundStage(), threading.Event()
    stage.submit(lambda: release.wait(10), ["video_a", "video_b"], limit_s=0.2)
    assert stage.overdue() == ()
    time.sleep(0.4)
    assert list(stage.overdue()) == ["video_a", "video_b"]
    release.set()
    assert stage.drain(timeout_s=5) and stage.overdue() == ()
    stage.submit(lambda: None)  # no limit given: never overdue
    assert stage.drain(timeout_s=5) and stage.overdue() == ()

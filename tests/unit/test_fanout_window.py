"""The room fan-out window (gate/rooms.py): the smaller of what the audience suggests and
DUTY times what the room's fan-outs cost, never past MAX_WINDOW."""
import math

from gate.rooms import DUTY, MAX_WINDOW, WINDOW_PER_MEMBER, fanout_window, smoothed


def test_a_room_never_fanned_out_is_not_held():
    assert fanout_window(5000, 0.0) == 0.0


def test_a_cheap_fan_out_is_not_held_the_audience_window():
    # 2,500 members would wait 50 ms; fan-outs of 2 ms are held 3 x 2 ms
    assert math.isclose(fanout_window(2500, 0.002), DUTY * 0.002)


def test_the_audience_bounds_a_costly_fan_out():
    # 500 members: 10 ms, however long the (preempted) fan-outs took
    assert math.isclose(fanout_window(500, 0.2), 500 * WINDOW_PER_MEMBER)


def test_never_past_the_maximum():
    assert fanout_window(100_000, 1.0) == MAX_WINDOW


def test_cost_is_smoothed_half_and_half():
    assert smoothed(None, 0.010) == 0.010
    assert math.isclose(smoothed(0.010, 0.030), 0.020)
    cost = None
    for took in (0.1, 0.001, 0.001, 0.001, 0.001):
        cost = smoothed(cost, took)
    assert cost < 0.008                # one slow (preempted) fan-out fades within a few

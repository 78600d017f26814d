"""The progress/cancel protocol."""

import pytest

from satseg_plugin.core.errors import CanceledError
from satseg_plugin.core.progress import Feedback, NullFeedback, RecordingFeedback, SubFeedback, track


def test_track_reports_progress_and_yields_everything():
    fb = RecordingFeedback()
    assert list(track(range(4), fb)) == [0, 1, 2, 3]
    assert fb.progress == [25.0, 50.0, 75.0, 100.0]


def test_track_stops_on_cancel():
    fb = RecordingFeedback(cancel_after=2)
    seen = []
    with pytest.raises(CanceledError):
        for item in track(range(10), fb):
            seen.append(item)
    assert seen == [0, 1]


def test_sub_feedback_maps_range():
    fb = RecordingFeedback()
    sub = SubFeedback(fb, 50, 100)
    sub.set_progress(0)
    sub.set_progress(50)
    sub.set_progress(100)
    assert fb.progress == [50.0, 75.0, 100.0]
    with pytest.raises(ValueError):
        SubFeedback(fb, 80, 20)


def test_protocol_is_structural():
    assert isinstance(NullFeedback(), Feedback)
    assert isinstance(RecordingFeedback(), Feedback)

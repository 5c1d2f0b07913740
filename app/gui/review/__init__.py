"""The engineer's review of a recording: timeline strip, events panel, marks, summary, clip export."""

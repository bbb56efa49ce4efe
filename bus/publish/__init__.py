"""Publishing typed events: library call and the `bus publish` command's engine."""

from bus.publish.publisher import Published, Publisher, PublishSummary

__all__ = ["Published", "Publisher", "PublishSummary"]

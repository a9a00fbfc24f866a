"""Test doubles shipped with tierwise, for its own tests, its benchmarks and for yours.

``FakeUpstream`` is a real HTTP server on 127.0.0.1 that speaks the OpenAI Chat Completions or the Anthropic
Messages API and answers each request as scripted (an answer, a delay, an HTTP error, a dropped connection,
broken JSON), recording what it received.
"""

from tierwise.testing.upstreams import Behaviour, FakeUpstream, ReceivedRequest

__all__ = ["Behaviour", "FakeUpstream", "ReceivedRequest"]

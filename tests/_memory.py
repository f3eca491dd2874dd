"""kombu's in-memory broker keeps one state for the whole process; tests start it empty."""

from __future__ import annotations

from kombu import pools
from kombu.transport import memory


def reset_memory_broker() -> None:
    """Forget every exchange, binding and queue declared on ``memory://`` so far.

    Like RabbitMQ, the memory broker refuses to redeclare an exchange with another type, and
    different profiles declare the same lane name differently (direct or topic).
    """
    memory.Transport.global_state.clear()
    memory.Channel.queues.clear()
    # Pooled connections remember what they declared, and would not declare it again.
    pools.reset()

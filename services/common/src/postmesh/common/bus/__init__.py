"""The message bus: one interface, a Kafka implementation and an embedded SQLite one."""

from postmesh.common.bus.base import Bus, BusRecord, Handler
from postmesh.common.bus.factory import create_bus

__all__ = ["Bus", "BusRecord", "Handler", "create_bus"]

"""gRPC stubs of the internal services, on channels with retries (see postmesh.common.grpc)."""

from __future__ import annotations

from postmesh.api.auth.v1 import auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2_grpc
from postmesh.common.grpc import channel
from postmesh.common.grpc_security import GrpcSecurity


def store_stub(address: str, security: GrpcSecurity) -> store_pb2_grpc.StoreServiceStub:
    return store_pb2_grpc.StoreServiceStub(channel(address, security, "store"))


def auth_stub(address: str, security: GrpcSecurity) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channel(address, security, "auth"))

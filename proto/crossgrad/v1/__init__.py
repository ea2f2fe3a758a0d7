"""crossgrad.v1: the gRPC contract (generated from the .proto files beside it; `make proto`)."""

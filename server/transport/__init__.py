"""The gRPC side of the server: options, converters, servicer, interceptors, worker pool."""

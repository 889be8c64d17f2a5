"""Receive stage: OTLP/gRPC and OTLP/HTTP servers in front of the pipeline."""

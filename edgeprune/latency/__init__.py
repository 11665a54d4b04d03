"""Device latency: what a model will cost on the target, estimated (roofline) until measured."""

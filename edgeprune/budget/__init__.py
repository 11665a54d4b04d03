"""Budget-driven compression: the widths, input size and latency source that fit a device's latency budget."""

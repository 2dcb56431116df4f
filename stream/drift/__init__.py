"""Drift monitoring: the monitor, its ring of sub-windows, binning, window statistics and
Prometheus view (``monitor``, ``ring``, ``stats``, ``window``, ``metrics``)."""

__all__: list[str] = []

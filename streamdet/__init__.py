"""streamdet: streaming multivariate anomaly detection for operations teams."""

__version__ = "0.1.0"

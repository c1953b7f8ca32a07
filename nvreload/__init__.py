"""nvreload: reload the NVIDIA kernel driver without a reboot, and diagnose the GPU stack."""

__version__ = "0.1.0"

"""The doors to the machine: a root filesystem, one command runner, one NVML session."""

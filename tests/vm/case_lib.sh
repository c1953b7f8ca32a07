# Sourced by every real-kernel case before its own lines (as /job/lib.sh): set up the node the case
# describes, run nvreload from the checkout, and write what the test asserts on into /job.
KVER=$(uname -r)
# whatever happens, bring back the kernel log and nvreload's journal for the assertion message
# (dmesg, not journalctl: under TCG journalctl alone costs seconds per case)
trap 'dmesg > /job/guest-dmesg.txt 2>&1; cp /var/lib/nvreload/journal.json /job/nvreload-journal.json 2>/dev/null' EXIT
UPDATES=/lib/modules/$KVER/updates/dkms
LIBDIR=/usr/lib/x86_64-linux-gnu
export NVRELOAD_NVML_TIMEOUT=20

# nvreload from the checkout shared at /src
nvr() { PYTHONPATH=/src python3 -m nvreload "$@"; }

# The NVIDIA kernel modules of VERSION on disk, as a driver package or DKMS leaves them.
install_modules() {
    mkdir -p "$UPDATES"
    rm -f "$UPDATES"/nvidia*.ko
    cp /vm/modules/"$1"/nvidia*.ko "$UPDATES/"
    depmod -a
}

# The userspace of VERSION: libnvidia-ml and libcuda, with their .so.1 links, as the package does.
install_userspace() {
    rm -f "$LIBDIR"/libnvidia-ml.so.* "$LIBDIR"/libcuda.so.*
    cp /vm/lib/"$1"/libnvidia-ml.so."$1" /vm/lib/"$1"/libcuda.so."$1" "$LIBDIR/"
    ln -sf "libnvidia-ml.so.$1" "$LIBDIR/libnvidia-ml.so.1"
    ln -sf "libcuda.so.$1" "$LIBDIR/libcuda.so.1"
    ldconfig
}

install_driver() { install_modules "$1"; install_userspace "$1"; }

# Load the stack the way a node boots it: nvidia_drm pulls nvidia_modeset and nvidia; uvm apart.
load_stack() { modprobe nvidia_drm && modprobe nvidia_uvm; }

loaded_version() { cat /sys/module/nvidia/version 2>/dev/null || echo none; }

# A plain process holding the GPU (not in a unit nvreload knows): $! is its pid.
start_holder() { setsid sleep infinity < /dev/nvidia0 > /dev/null 2>&1 & }

# A holder that survives SIGTERM (only SIGKILL ends it) and answers it by forking a child that
# inherits its descriptor, as a launcher respawning a worker does: the child is born after the plan.
start_stubborn_holder() {
    setsid bash -c 'trap "sleep 300 &" TERM; exec 3</dev/nvidia-uvm; while true; do sleep 1; done' > /dev/null 2>&1 &
}

# nvidia-persistenced as a real systemd unit that keeps /dev/nvidiactl open, as the real one does.
# $1: an ExecStartPre that decides whether it may start again (default: always).
persistenced_unit() {
    cat > /etc/systemd/system/nvidia-persistenced.service <<UNIT
[Unit]
Description=NVIDIA Persistence Daemon (stand-in)
[Service]
ExecStartPre=${1:-/bin/true}
ExecStart=/bin/sh -c 'exec sleep infinity < /dev/nvidiactl'
UNIT
    systemctl daemon-reload
    systemctl start nvidia-persistenced.service
}

# Run nvreload, keep its stdout as /job/NAME.json and its exit code as /job/NAME.rc.
record() {
    local name=$1; shift
    nvr "$@" > "/job/$name.json" 2> "/job/$name.err"
    echo $? > "/job/$name.rc"
    echo "== nvreload $* -> rc $(cat "/job/$name.rc")"; cat "/job/$name.err"
}

# What the node looks like now, for the test to assert on.
snapshot_state() {
    {
        echo "loaded_version=$(loaded_version)"
        echo "modules=$(awk '/^nvidia/{print $1}' /proc/modules | sort | tr '\n' ' ')"
        echo "persistenced=$(systemctl is-active nvidia-persistenced.service 2>/dev/null)"
        echo "drm_modeset=$(cat /sys/module/nvidia_drm/parameters/modeset 2>/dev/null)"
        echo "gpu_firmware=$(cat /sys/module/nvidia/parameters/NVreg_EnableGpuFirmware 2>/dev/null)"
        echo "journal_state=$(python3 -c 'import json; print(json.load(open("/var/lib/nvreload/journal.json"))["state"])' 2>/dev/null || echo none)"
    } > "/job/$1.state"
    cat "/job/$1.state"
}

/* A stand-in libnvidia-ml.so.1 for tests: the real library cannot work without the NVIDIA kernel
 * module. It exports the NVML entry points nvreload's probe calls, with the ABI of nvml.h, and
 * behaves as the environment says:
 *   STUB_NVML_INIT      return code of nvmlInitWithFlags (18 = RM version mismatch, 9 = driver not loaded)
 *   STUB_NVML_INIT_SLEEP seconds nvmlInitWithFlags sleeps first (a wedged GPU)
 *   STUB_NVML_CRASH     "init": SIGSEGV inside nvmlInitWithFlags (a half-upgraded library)
 *   STUB_NVML_DRIVER    driver version string
 *   STUB_NVML_GPUS      "name|uuid|busid|persistence|mig|pid,pid;..." one entry per GPU
 *   STUB_NVML_UNSUPPORTED  "mig": nvmlDeviceGetMigMode returns NVML_ERROR_NOT_SUPPORTED
 *   STUB_NVML_LOG       a file each init/shutdown is appended to (to prove the session closes)
 *
 * Built with -DSTUB_FROM_KERNEL='"<version>"' (the VM tests' libnvidia-ml.so.<version>) it behaves
 * like the real library against the loaded module instead: Driver Not Loaded without
 * /sys/module/nvidia, the RM version mismatch while the loaded module's version is another, and
 * otherwise the GPUs bound to the nvidia PCI driver, with /dev/nvidiactl held open until shutdown.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define MAX_GPUS 16
#define MAX_PIDS 16

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    char name[96], uuid[96], bus_id[32];
    unsigned int persistence, mig, pid_count;
    unsigned int pids[MAX_PIDS];
} stub_gpu;

static stub_gpu gpus[MAX_GPUS];
static unsigned int gpu_count;

static void log_call(const char *what) {
    const char *path = getenv("STUB_NVML_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    fprintf(f, "%s\n", what);
    fclose(f);
}

__attribute__((unused)) static void parse_gpus(void) {
    const char *spec = getenv("STUB_NVML_GPUS");
    gpu_count = 0;
    if (!spec || !*spec) return;
    char *copy = strdup(spec), *save_gpu = NULL;
    for (char *entry = strtok_r(copy, ";", &save_gpu); entry && gpu_count < MAX_GPUS;
         entry = strtok_r(NULL, ";", &save_gpu)) {
        stub_gpu *g = &gpus[gpu_count++];
        memset(g, 0, sizeof *g);
        char *fields[6] = {0};
        int n = 0;
        for (char *p = entry; n < 6; n++) {
            fields[n] = p;
            char *bar = strchr(p, '|');
            if (!bar) { n++; break; }
            *bar = '\0';
            p = bar + 1;
        }
        if (fields[0]) snprintf(g->name, sizeof g->name, "%s", fields[0]);
        if (fields[1]) snprintf(g->uuid, sizeof g->uuid, "%s", fields[1]);
        if (fields[2]) snprintf(g->bus_id, sizeof g->bus_id, "%s", fields[2]);
        g->persistence = fields[3] ? (unsigned)atoi(fields[3]) : 0;
        g->mig = fields[4] ? (unsigned)atoi(fields[4]) : 0;
        if (fields[5]) {
            char *save_pid = NULL;
            for (char *pid = strtok_r(fields[5], ",", &save_pid); pid && g->pid_count < MAX_PIDS;
                 pid = strtok_r(NULL, ",", &save_pid))
                g->pids[g->pid_count++] = (unsigned)atoi(pid);
        }
    }
    free(copy);
}

#ifdef STUB_FROM_KERNEL
static int ctl_fd = -1;

static int read_line(const char *path, char *out, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(out, (int)size, f)) { fclose(f); return -1; }
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

/* What the real library finds: the loaded module's version and the GPUs the driver bound. */
static int init_from_kernel(void) {
    char loaded[64];
    if (read_line("/sys/module/nvidia/version", loaded, sizeof loaded) != 0) return 9;
    if (strcmp(loaded, STUB_FROM_KERNEL) != 0) return 18;
    ctl_fd = open("/dev/nvidiactl", O_RDWR | O_CLOEXEC);
    if (ctl_fd < 0) return 9;
    gpu_count = 0;
    DIR *dir = opendir("/sys/bus/pci/drivers/nvidia");
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL && gpu_count < MAX_GPUS) {
        if (strchr(entry->d_name, ':') == NULL) continue;
        stub_gpu *g = &gpus[gpu_count++];
        memset(g, 0, sizeof *g);
        snprintf(g->name, sizeof g->name, "NVIDIA H100 80GB HBM3");
        snprintf(g->uuid, sizeof g->uuid, "GPU-stand-in-%.40s", entry->d_name);
        snprintf(g->bus_id, sizeof g->bus_id, "0000%.20s", entry->d_name);
    }
    if (dir) closedir(dir);
    return NVML_SUCCESS;
}
#endif

static stub_gpu *gpu_of(void *handle) {
    stub_gpu *g = handle;
    return (g >= gpus && g < gpus + gpu_count) ? g : NULL;
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    const char *delay = getenv("STUB_NVML_INIT_SLEEP");
    if (delay) sleep((unsigned)atoi(delay));
    const char *crash = getenv("STUB_NVML_CRASH");
    if (crash && strcmp(crash, "init") == 0) raise(SIGSEGV);
#ifdef STUB_FROM_KERNEL
    int result = init_from_kernel();
    if (result == NVML_SUCCESS) log_call("init");
    return result;
#else
    const char *code = getenv("STUB_NVML_INIT");
    int result = code ? atoi(code) : NVML_SUCCESS;
    if (result == NVML_SUCCESS) { parse_gpus(); log_call("init"); }
    return result;
#endif
}

int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
int nvmlShutdown(void) {
#ifdef STUB_FROM_KERNEL
    if (ctl_fd >= 0) { close(ctl_fd); ctl_fd = -1; }
#endif
    log_call("shutdown");
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int result) {
    switch (result) {
    case 9: return "Driver Not Loaded";
    case 12: return "NVML Shared Library Not Found";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    default: return "Unknown Error";
    }
}

static int copy_string(char *out, unsigned int length, const char *value) {
    if (!out || strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, value);
    return NVML_SUCCESS;
}

int nvmlSystemGetDriverVersion(char *version, unsigned int length) {
#ifdef STUB_FROM_KERNEL
    return copy_string(version, length, STUB_FROM_KERNEL);
#else
    const char *value = getenv("STUB_NVML_DRIVER");
    return copy_string(version, length, value ? value : "550.127.08");
#endif
}

int nvmlSystemGetCudaDriverVersion(int *version) { *version = 12040; return NVML_SUCCESS; }

int nvmlDeviceGetCount_v2(unsigned int *count) { *count = gpu_count; return NVML_SUCCESS; }

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (index >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    stub_gpu *g = gpu_of(device);
    return g ? copy_string(name, length, g->name) : NVML_ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    stub_gpu *g = gpu_of(device);
    return g ? copy_string(uuid, length, g->uuid) : NVML_ERROR_INVALID_ARGUMENT;
}

int nvmlDeviceGetPciInfo_v3(void *device, nvmlPciInfo_t *pci) {
    stub_gpu *g = gpu_of(device);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", g->bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.15s", g->bus_id);
    return NVML_SUCCESS;
}

int nvmlDeviceGetPersistenceMode(void *device, int *mode) {
    stub_gpu *g = gpu_of(device);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    *mode = (int)g->persistence;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMigMode(void *device, unsigned int *current, unsigned int *pending) {
    stub_gpu *g = gpu_of(device);
    const char *unsupported = getenv("STUB_NVML_UNSUPPORTED");
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    if (unsupported && strstr(unsupported, "mig")) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = g->mig;
    return NVML_SUCCESS;
}

static int list_processes(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    stub_gpu *g = gpu_of(device);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    if (g->pid_count == 0) { *count = 0; return NVML_SUCCESS; }
    if (!infos || *count < g->pid_count) { *count = g->pid_count; return NVML_ERROR_INSUFFICIENT_SIZE; }
    for (unsigned int i = 0; i < g->pid_count; i++) {
        memset(&infos[i], 0, sizeof infos[i]);
        infos[i].pid = g->pids[i];
        infos[i].usedGpuMemory = 1ULL << 20;
    }
    *count = g->pid_count;
    return NVML_SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return list_processes(device, count, infos);
}

int nvmlDeviceGetGraphicsRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    (void)device; *count = 0; (void)infos;
    return NVML_SUCCESS;
}

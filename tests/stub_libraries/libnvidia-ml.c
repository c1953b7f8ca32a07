/* A stand-in libnvidia-ml.so.1 for tests: the real library cannot work without the NVIDIA kernel
 * module. It exports the NVML entry points nvreload's probe calls, with the ABI of nvml.h, and
 * behaves as the environment says:
 *   STUB_NVML_INIT      return code of nvmlInitWithFlags (18 = RM version mismatch, 9 = driver not loaded)
 *   STUB_NVML_INIT_SLEEP seconds nvmlInitWithFlags sleeps first (a wedged GPU)
 *   STUB_NVML_CRASH     "init": SIGSEGV inside nvmlInitWithFlags (a half-upgraded library)
 *   STUB_NVML_DRIVER    driver version string
 *   STUB_NVML_GPUS      "name|uuid|busid|persistence|mig|pid,pid;..." one entry per GPU
 *                       (mig "0>1": disabled now, enabled at the next reset)
 *   STUB_NVML_UNSUPPORTED  "mig": nvmlDeviceGetMigMode returns NVML_ERROR_NOT_SUPPORTED
 *   STUB_NVML_LOG       a file each init/shutdown is appended to (to prove the session closes)
 *   STUB_NVML_MIG       a file holding the MIG instances, one GPU instance a line, so that what one
 *                       process creates the next one lists:
 *                       <gpu index> <gi profile id> <start> <size> [<ci profile id>,<start>,<size> ...]
 *                       Creating an instance that overlaps another fails with Insufficient Resources.
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
    unsigned int persistence, mig, mig_pending, pid_count;
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
        /* "0>1": MIG disabled now, enabled at the next GPU reset */
        g->mig_pending = fields[4] && strchr(fields[4], '>') ? (unsigned)atoi(strchr(fields[4], '>') + 1) : g->mig;
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

/* MIG -------------------------------------------------------------------------------------------- */
#define NVML_ERROR_INSUFFICIENT_RESOURCES 23
#define MAX_GI 32
#define MAX_CI 8

typedef struct { unsigned int start, size; } nvmlPlacement_t;
typedef struct {
    unsigned int id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount, copyEngineCount,
        decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;
typedef struct { void *device; unsigned int id, profileId; nvmlPlacement_t placement; } nvmlGpuInstanceInfo_t;
typedef struct {
    unsigned int id, sliceCount, instanceCount, multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount,
        sharedEncoderCount, sharedJpegCount, sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;
typedef struct { void *device; void *gpuInstance; unsigned int id, profileId; nvmlPlacement_t placement; } nvmlComputeInstanceInfo_t;

typedef struct { unsigned int gpu, profile, start, size, ci_count; unsigned int ci[MAX_CI][3]; } stub_gi;
typedef struct { unsigned int gi, index; } stub_ci;
static stub_gi gis[MAX_GI];
static unsigned int gi_count;
static stub_ci cis[MAX_GI * MAX_CI];

/* An H100's GPU instance profiles by NVML enum: 1g.10gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb. */
static const unsigned int GI_PROFILE_IDS[] = {19, 14, 9, 5, 0};
static const unsigned int GI_INSTANCES[] = {7, 3, 2, 1, 1};
static const unsigned int GI_SLICES[] = {1, 2, 3, 4, 7};

__attribute__((unused)) static void load_mig(void) {
    const char *path = getenv("STUB_NVML_MIG");
    gi_count = 0;
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (gi_count < MAX_GI && fgets(line, sizeof line, f)) {
        stub_gi *g = &gis[gi_count];
        memset(g, 0, sizeof *g);
        int used = 0;
        if (sscanf(line, "%u %u %u %u%n", &g->gpu, &g->profile, &g->start, &g->size, &used) != 4) continue;
        char *p = line + used;
        unsigned int a, b, c;
        int step = 0;
        while (g->ci_count < MAX_CI && sscanf(p, " %u,%u,%u%n", &a, &b, &c, &step) == 3) {
            g->ci[g->ci_count][0] = a; g->ci[g->ci_count][1] = b; g->ci[g->ci_count][2] = c;
            g->ci_count++;
            p += step;
        }
        gi_count++;
    }
    fclose(f);
}

static void save_mig(void) {
    const char *path = getenv("STUB_NVML_MIG");
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    for (unsigned int i = 0; i < gi_count; i++) {
        fprintf(f, "%u %u %u %u", gis[i].gpu, gis[i].profile, gis[i].start, gis[i].size);
        for (unsigned int j = 0; j < gis[i].ci_count; j++)
            fprintf(f, " %u,%u,%u", gis[i].ci[j][0], gis[i].ci[j][1], gis[i].ci[j][2]);
        fprintf(f, "\n");
    }
    fclose(f);
}

static stub_gi *gi_of(void *handle) {
    stub_gi *g = handle;
    return (g >= gis && g < gis + gi_count) ? g : NULL;
}

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
    if (result == NVML_SUCCESS) { parse_gpus(); load_mig(); log_call("init"); }
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
    case 23: return "Insufficient Resources";
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
    *current = g->mig;
    *pending = g->mig_pending;
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

int nvmlDeviceGetGpuInstanceProfileInfo(void *device, unsigned int profile, nvmlGpuInstanceProfileInfo_t *info) {
    if (!gpu_of(device)) return NVML_ERROR_INVALID_ARGUMENT;
    if (profile >= sizeof GI_PROFILE_IDS / sizeof GI_PROFILE_IDS[0]) return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    info->id = GI_PROFILE_IDS[profile];
    info->instanceCount = GI_INSTANCES[profile];
    info->sliceCount = GI_SLICES[profile];
    return NVML_SUCCESS;
}

int nvmlDeviceGetGpuInstances(void *device, unsigned int profileId, void **instances, unsigned int *count) {
    stub_gpu *g = gpu_of(device);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (unsigned int i = 0; i < gi_count; i++)
        if (gis[i].gpu == (unsigned int)(g - gpus) && gis[i].profile == profileId) instances[n++] = &gis[i];
    *count = n;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceGetInfo(void *instance, nvmlGpuInstanceInfo_t *info) {
    stub_gi *g = gi_of(instance);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    info->device = &gpus[g->gpu];
    info->id = (unsigned int)(g - gis) + 1;
    info->profileId = g->profile;
    info->placement.start = g->start;
    info->placement.size = g->size;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceGetComputeInstanceProfileInfo(void *instance, unsigned int profile, unsigned int engine,
                                                 nvmlComputeInstanceProfileInfo_t *info) {
    (void)engine;
    if (!gi_of(instance)) return NVML_ERROR_INVALID_ARGUMENT;
    if (profile > 4) return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    info->id = profile;  /* NVML's compute instance profile ids follow the enum */
    info->instanceCount = MAX_CI;
    info->sliceCount = profile + 1;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceGetComputeInstances(void *instance, unsigned int profileId, void **instances, unsigned int *count) {
    stub_gi *g = gi_of(instance);
    if (!g) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0, base = (unsigned int)(g - gis) * MAX_CI;
    for (unsigned int j = 0; j < g->ci_count; j++) {
        if (g->ci[j][0] != profileId) continue;
        cis[base + j].gi = (unsigned int)(g - gis);
        cis[base + j].index = j;
        instances[n++] = &cis[base + j];
    }
    *count = n;
    return NVML_SUCCESS;
}

int nvmlComputeInstanceGetInfo_v2(void *instance, nvmlComputeInstanceInfo_t *info) {
    stub_ci *c = instance;
    if (c < cis || c >= cis + MAX_GI * MAX_CI || c->gi >= gi_count) return NVML_ERROR_INVALID_ARGUMENT;
    stub_gi *g = &gis[c->gi];
    info->device = &gpus[g->gpu];
    info->gpuInstance = g;
    info->id = c->index;
    info->profileId = g->ci[c->index][0];
    info->placement.start = g->ci[c->index][1];
    info->placement.size = g->ci[c->index][2];
    return NVML_SUCCESS;
}

int nvmlDeviceCreateGpuInstanceWithPlacement(void *device, unsigned int profileId, const nvmlPlacement_t *placement,
                                             void **instance) {
    stub_gpu *gpu = gpu_of(device);
    if (!gpu || gi_count >= MAX_GI) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int index = (unsigned int)(gpu - gpus);
    if (!gpu->mig) return NVML_ERROR_NOT_SUPPORTED;
    for (unsigned int i = 0; i < gi_count; i++) {
        if (gis[i].gpu != index) continue;
        if (placement->start < gis[i].start + gis[i].size && gis[i].start < placement->start + placement->size)
            return NVML_ERROR_INSUFFICIENT_RESOURCES;  /* overlaps an instance that exists */
    }
    stub_gi *g = &gis[gi_count++];
    memset(g, 0, sizeof *g);
    g->gpu = index; g->profile = profileId; g->start = placement->start; g->size = placement->size;
    save_mig();
    *instance = g;
    return NVML_SUCCESS;
}

int nvmlGpuInstanceCreateComputeInstanceWithPlacement(void *instance, unsigned int profileId,
                                                      const nvmlPlacement_t *placement, void **compute) {
    stub_gi *g = gi_of(instance);
    if (!g || g->ci_count >= MAX_CI) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int j = g->ci_count++;
    g->ci[j][0] = profileId; g->ci[j][1] = placement->start; g->ci[j][2] = placement->size;
    save_mig();
    cis[(unsigned int)(g - gis) * MAX_CI + j].gi = (unsigned int)(g - gis);
    cis[(unsigned int)(g - gis) * MAX_CI + j].index = j;
    *compute = &cis[(unsigned int)(g - gis) * MAX_CI + j];
    return NVML_SUCCESS;
}

/* A stand-in libcuda.so.1 for tests (the real one needs the NVIDIA kernel module). It exports the
 * driver API entry points `--verify`'s CUDA probe calls, with cuda.h's ABI, and answers as the
 * environment says:
 *   STUB_CUDA_INIT     return code of cuInit (803 = CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)
 *   STUB_CUDA_DEVICES  how many devices cuDeviceGetCount reports (default 1)
 *   STUB_CUDA_RETAIN   return code of cuDevicePrimaryCtxRetain (2 = CUDA_ERROR_OUT_OF_MEMORY)
 *
 * Built with -DSTUB_FROM_KERNEL='"<version>"' (the VM tests' libcuda.so.<version>), cuInit answers
 * from the loaded module instead: CUDA_ERROR_NO_DEVICE without it or without a bound GPU,
 * CUDA_ERROR_SYSTEM_DRIVER_MISMATCH while the loaded module is another version.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int env_int(const char *name, int fallback) {
    const char *value = getenv(name);
    return value ? atoi(value) : fallback;
}

int cuGetErrorName(int error, const char **name) {
    switch (error) {
    case 0: *name = "CUDA_SUCCESS"; return 0;
    case 2: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return 0;
    case 100: *name = "CUDA_ERROR_NO_DEVICE"; return 0;
    case 803: *name = "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"; return 0;
    default: *name = "CUDA_ERROR_UNKNOWN"; return 0;
    }
}

#ifdef STUB_FROM_KERNEL
static int bound_gpus(void) {
    int count = 0;
    DIR *dir = opendir("/sys/bus/pci/drivers/nvidia");
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL)
        if (strchr(entry->d_name, ':')) count++;
    if (dir) closedir(dir);
    return count;
}

int cuInit(unsigned int flags) {
    char loaded[64] = "";
    FILE *f = fopen("/sys/module/nvidia/version", "r");
    (void)flags;
    if (!f) return 100;
    if (!fgets(loaded, sizeof loaded, f)) loaded[0] = '\0';
    fclose(f);
    loaded[strcspn(loaded, "\n")] = '\0';
    if (strcmp(loaded, STUB_FROM_KERNEL) != 0) return 803;
    return bound_gpus() > 0 ? 0 : 100;
}

int cuDeviceGetCount(int *count) { *count = bound_gpus(); return 0; }
#else
int cuInit(unsigned int flags) { (void)flags; return env_int("STUB_CUDA_INIT", 0); }

int cuDeviceGetCount(int *count) { *count = env_int("STUB_CUDA_DEVICES", 1); return 0; }
#endif

int cuDeviceGet(int *device, int ordinal) {
    int count;
    cuDeviceGetCount(&count);
    if (ordinal < 0 || ordinal >= count) return 101; /* CUDA_ERROR_INVALID_DEVICE */
    *device = ordinal;
    return 0;
}

int cuDevicePrimaryCtxRetain(void **context, int device) {
    static int token;
    int result = env_int("STUB_CUDA_RETAIN", 0);
    if (result == 0) *context = &token + device;
    return result;
}

int cuDevicePrimaryCtxRelease_v2(int device) { (void)device; return 0; }

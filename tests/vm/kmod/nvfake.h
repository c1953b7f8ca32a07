/* Shared by the stand-in NVIDIA modules of nvreload's VM tests. Each dependent module calls a
 * symbol of the module below it, so the kernel records the same holders graph as the real stack:
 * nvidia <- nvidia_uvm, nvidia_modeset <- nvidia_drm, nvidia + ib_core <- nvidia_peermem. */
#ifndef NVFAKE_H
#define NVFAKE_H

#include <linux/string.h>

#ifndef NV_VERSION
#error "build with NV_VERSION=<driver version>"
#endif
#define NV_STR2(x) #x
#define NV_STR(x) NV_STR2(x)
#define NV_VERSION_STRING NV_STR(NV_VERSION)

int nvfake_core_users(void);       /* exported by nvidia */
const char *nvfake_core_version(void); /* exported by nvidia */
int nvfake_modeset_users(void);    /* exported by nvidia_modeset */

/* The real modules refuse to load next to an nvidia.ko of another version ("API mismatch"). */
#define NVFAKE_REQUIRE_SAME_VERSION(client)                                                        \
	do {                                                                                       \
		if (strcmp(nvfake_core_version(), NV_VERSION_STRING) != 0) {                      \
			pr_err("NVRM: API mismatch: the client '%s' has the version %s, but this "  \
			       "kernel module has the version %s.\n", client, NV_VERSION_STRING,   \
			       nvfake_core_version());                                             \
			return -EINVAL;                                                            \
		}                                                                                  \
	} while (0)

#endif

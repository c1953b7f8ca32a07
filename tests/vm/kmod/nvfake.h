/* Shared by the stand-in NVIDIA modules of nvreload's VM tests. Each dependent module calls a
 * symbol of the module below it, so the kernel records the same holders graph as the real stack:
 * nvidia <- nvidia_uvm, nvidia_modeset <- nvidia_drm, nvidia + ib_core <- nvidia_peermem. */
#ifndef NVFAKE_H
#define NVFAKE_H

#ifndef NV_VERSION
#error "build with NV_VERSION=<driver version>"
#endif
#define NV_STR2(x) #x
#define NV_STR(x) NV_STR2(x)
#define NV_VERSION_STRING NV_STR(NV_VERSION)

int nvfake_core_users(void);       /* exported by nvidia */
int nvfake_modeset_users(void);    /* exported by nvidia_modeset */

#endif

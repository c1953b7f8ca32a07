/* Stand-in for nvidia-drm.ko: holds nvidia_modeset; takes modeset/fbdev like the real one. */
#include <linux/module.h>
#include "nvfake.h"

static bool modeset;
module_param(modeset, bool, 0400);
static bool fbdev;
module_param(fbdev, bool, 0400);

static int __init drm_init(void) { return nvfake_modeset_users() < 0 ? -EINVAL : 0; }
static void __exit drm_exit(void) {}

module_init(drm_init);
module_exit(drm_exit);
MODULE_LICENSE("Dual MIT/GPL");
MODULE_VERSION(NV_VERSION_STRING);
